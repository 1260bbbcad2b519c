//! Protocol-buffer text format, enough for TensorFlow Serving's config
//! files (`--model_config_file`, `--batching_parameters_file`): fields
//! `name: value` and `name { ... }`, strings in single or double quotes,
//! `#` comments. The result is a tree that the config readers walk.

/// A parsed message: its fields in order (a repeated field appears once per value).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Message {
    pub fields: Vec<(String, Field)>,
}

/// A field's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Field {
    Scalar(String),
    Message(Message),
}

impl Message {
    /// Every value of field `name`.
    pub fn all<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a Field> + use<'a, 'n> {
        self.fields.iter().filter(move |(n, _)| n == name).map(|(_, f)| f)
    }
    /// The last value of scalar field `name`.
    pub fn scalar<'a>(&'a self, name: &str) -> Option<&'a str> {
        self.all(name).filter_map(|f| if let Field::Scalar(s) = f { Some(s.as_str()) } else { None }).last()
    }
    /// The last value of message field `name`.
    pub fn message<'a>(&'a self, name: &str) -> Option<&'a Message> {
        self.all(name).filter_map(|f| if let Field::Message(m) = f { Some(m) } else { None }).last()
    }
    /// Field names that are not in `known` (to reject typos).
    pub fn unknown<'a>(&'a self, known: &[&str]) -> Option<&'a str> {
        self.fields.iter().map(|(n, _)| n.as_str()).find(|n| !known.contains(n))
    }
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Open,
    Close,
    Colon,
}

fn tokenize(text: &str) -> Result<Vec<(Token, usize)>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    let mut line = 1;
    while let Some(&(i, c)) = chars.peek() {
        match c {
            '\n' => {
                line += 1;
                chars.next();
            }
            c if c.is_whitespace() || c == ',' || c == ';' => {
                chars.next();
            }
            '#' => {
                while chars.peek().is_some_and(|&(_, c)| c != '\n') {
                    chars.next();
                }
            }
            '{' | '<' => {
                tokens.push((Token::Open, line));
                chars.next();
            }
            '}' | '>' => {
                tokens.push((Token::Close, line));
                chars.next();
            }
            ':' => {
                tokens.push((Token::Colon, line));
                chars.next();
            }
            '\'' | '"' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some((_, q)) if q == c => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => s.push('\n'),
                            Some((_, 't')) => s.push('\t'),
                            Some((_, e)) => s.push(e),
                            None => return Err(format!("line {line}: unterminated string")),
                        },
                        Some((_, '\n')) | None => return Err(format!("line {line}: unterminated string")),
                        Some((_, ch)) => s.push(ch),
                    }
                }
                tokens.push((Token::Str(s), line));
            }
            c if c.is_alphanumeric() || "_.-+".contains(c) => {
                let start = i;
                let mut end = i;
                while let Some(&(j, ch)) = chars.peek() {
                    if ch.is_alphanumeric() || "_.-+".contains(ch) {
                        end = j + ch.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push((Token::Ident(text[start..end].to_string()), line));
            }
            other => return Err(format!("line {line}: unexpected character {other:?}")),
        }
    }
    Ok(tokens)
}

/// Parse a text-format message.
pub fn parse(text: &str) -> Result<Message, String> {
    let tokens = tokenize(text)?;
    let mut pos = 0;
    let m = parse_fields(&tokens, &mut pos, 0)?;
    match tokens.get(pos) {
        None => Ok(m),
        Some((_, line)) => Err(format!("line {line}: unexpected '}}'")),
    }
}

fn parse_fields(tokens: &[(Token, usize)], pos: &mut usize, depth: usize) -> Result<Message, String> {
    if depth > 32 {
        return Err("messages nested more than 32 deep".into());
    }
    let mut m = Message::default();
    while let Some((t, line)) = tokens.get(*pos) {
        let name = match t {
            Token::Close => break,
            Token::Ident(name) => name.clone(),
            _ => return Err(format!("line {line}: expected a field name")),
        };
        *pos += 1;
        let colon = matches!(tokens.get(*pos), Some((Token::Colon, _)));
        if colon {
            *pos += 1;
        }
        match tokens.get(*pos) {
            Some((Token::Open, _)) => {
                *pos += 1;
                let inner = parse_fields(tokens, pos, depth + 1)?;
                match tokens.get(*pos) {
                    Some((Token::Close, _)) => *pos += 1,
                    _ => return Err(format!("line {line}: '{name}' is not closed")),
                }
                m.fields.push((name, Field::Message(inner)));
            }
            Some((Token::Ident(v), _)) | Some((Token::Str(v), _)) if colon => {
                m.fields.push((name, Field::Scalar(v.clone())));
                *pos += 1;
            }
            _ => return Err(format!("line {line}: field '{name}' has no value")),
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_config_list() {
        let m = parse(
            "model_config_list {\n  config { name: 'a' base_path: \"/m/a\" # comment\n model_version_policy { specific { versions: 1 versions: 3 } } }\n config: { name: 'b', base_path: '/m/b' }\n}",
        )
        .unwrap();
        let list = m.message("model_config_list").unwrap();
        let configs: Vec<&Field> = list.all("config").collect();
        assert_eq!(configs.len(), 2);
        let Field::Message(a) = configs[0] else { panic!() };
        assert_eq!(a.scalar("name"), Some("a"));
        assert_eq!(a.scalar("base_path"), Some("/m/a"));
        let versions: Vec<&Field> =
            a.message("model_version_policy").unwrap().message("specific").unwrap().all("versions").collect();
        assert_eq!(versions, vec![&Field::Scalar("1".into()), &Field::Scalar("3".into())]);
    }

    #[test]
    fn errors_name_the_line() {
        assert!(parse("a {\n b: 1\n").unwrap_err().contains("line"));
        assert!(parse("a: 'x\n").unwrap_err().contains("unterminated"));
        assert!(parse("}").is_err());
        assert!(parse("a:").is_err());
        assert!(parse(&"a {".repeat(100)).is_err());
    }
}

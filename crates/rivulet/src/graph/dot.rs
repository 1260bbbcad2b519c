//! Graphviz DOT export.

use super::Graph;
use crate::op::Op;
use std::fmt::Write;

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

impl Graph {
    /// The graph in Graphviz DOT: one box per node (name, op type, output
    /// types), data edges labelled with their types, control edges dashed;
    /// each function of the library (control-flow branches and bodies) in
    /// a cluster of its own, with a dotted edge from each node that calls it.
    pub fn to_dot(&self) -> String {
        let mut out = String::from(
            "digraph rivulet {\n  rankdir=TB;\n  compound=true;\n  node [shape=box, fontname=\"Helvetica\", fontsize=10];\n",
        );
        self.write_dot(&mut out, "", 1);
        out.push_str("}\n");
        out
    }

    fn write_dot(&self, out: &mut String, prefix: &str, depth: usize) {
        let pad = "  ".repeat(depth);
        let s = self.read();
        for (id, n) in s.nodes.iter().enumerate() {
            let types: Vec<String> = n.outputs.iter().map(|m| m.to_string()).collect();
            let style = match n.op.type_name() {
                "Placeholder" => ", style=filled, fillcolor=\"#dbeafe\"",
                "Const" => ", style=filled, fillcolor=\"#f3f4f6\"",
                "If" | "Case" | "While" => ", style=filled, fillcolor=\"#dcfce7\"",
                _ => "",
            };
            let _ = writeln!(
                out,
                "{pad}{prefix}n{id} [label=\"{}\\n{}\\n{}\"{style}];",
                escape(&n.name),
                n.op.type_name(),
                escape(&types.join(", "))
            );
        }
        for (id, n) in s.nodes.iter().enumerate() {
            for e in &n.inputs {
                let label = s.nodes[e.node].outputs.get(e.index).map(|m| m.to_string()).unwrap_or_default();
                let _ = writeln!(out, "{pad}{prefix}n{} -> {prefix}n{id} [label=\"{}\"];", e.node, escape(&label));
            }
            for c in &n.control_inputs {
                let _ = writeln!(out, "{pad}{prefix}n{c} -> {prefix}n{id} [style=dashed];");
            }
        }
        let calls: Vec<(usize, Vec<(u32, &str)>)> = s
            .nodes
            .iter()
            .enumerate()
            .map(|(id, n)| {
                let called = match &n.op {
                    Op::If { then_branch, else_branch, .. } => vec![(*then_branch, "then"), (*else_branch, "else")],
                    Op::Case { branches, .. } => branches.iter().map(|&b| (b, "branch")).collect(),
                    Op::While { spec } => vec![(spec.cond, "cond"), (spec.body, "body")],
                    _ => Vec::new(),
                };
                (id, called)
            })
            .collect();
        let functions = s.functions.clone();
        drop(s);
        for (k, f) in functions.iter().enumerate() {
            let inner = format!("{prefix}f{k}_");
            let _ = writeln!(out, "{pad}subgraph cluster_{inner} {{");
            let _ = writeln!(out, "{pad}  label=\"{}\"; style=rounded; color=\"#16a34a\";", escape(&f.name));
            f.graph.write_dot(out, &inner, depth + 1);
            let _ = writeln!(out, "{pad}}}");
        }
        for (id, called) in calls {
            for (f, label) in called {
                if functions.get(f as usize).is_some_and(|f| f.graph.num_nodes() > 0) {
                    let _ = writeln!(
                        out,
                        "{pad}{prefix}n{id} -> {prefix}f{f}_n0 [style=dotted, label=\"{label}\", lhead=cluster_{prefix}f{f}_];"
                    );
                }
            }
        }
    }
}

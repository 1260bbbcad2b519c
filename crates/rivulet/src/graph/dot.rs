//! Graphviz DOT export.

use super::Graph;
use std::fmt::Write;

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

impl Graph {
    /// The graph in Graphviz DOT: one box per node (name, op type, output
    /// types), data edges labelled with their types, control edges dashed.
    pub fn to_dot(&self) -> String {
        let s = self.read();
        let mut out = String::from(
            "digraph rivulet {\n  rankdir=TB;\n  node [shape=box, fontname=\"Helvetica\", fontsize=10];\n",
        );
        for (id, n) in s.nodes.iter().enumerate() {
            let types: Vec<String> = n.outputs.iter().map(|m| m.to_string()).collect();
            let style = match n.op.type_name() {
                "Placeholder" => ", style=filled, fillcolor=\"#dbeafe\"",
                "Const" => ", style=filled, fillcolor=\"#f3f4f6\"",
                _ => "",
            };
            let _ = writeln!(
                out,
                "  n{id} [label=\"{}\\n{}\\n{}\"{style}];",
                escape(&n.name),
                n.op.type_name(),
                escape(&types.join(", "))
            );
        }
        for (id, n) in s.nodes.iter().enumerate() {
            for e in &n.inputs {
                let label = s.nodes[e.node].outputs.get(e.index).map(|m| m.to_string()).unwrap_or_default();
                let _ = writeln!(out, "  n{} -> n{id} [label=\"{}\"];", e.node, escape(&label));
            }
            for c in &n.control_inputs {
                let _ = writeln!(out, "  n{c} -> n{id} [style=dashed];");
            }
        }
        out.push_str("}\n");
        out
    }
}

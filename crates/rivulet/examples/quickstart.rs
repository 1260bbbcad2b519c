//! Rivulet in one screen: the same computation eagerly and as a graph.

use rivulet::{ops, Ctx, DType, Graph, Result, Session, Tensor};

pub fn main() -> Result<()> {
    // Eager: each op runs as soon as it is called.
    let x = ops::random_normal(Ctx::Eager, [4, 3], 0.0, 1.0, DType::F32, Some(7))?;
    let w = Tensor::from([[0.5f32, -1.0], [1.5, 0.25], [-0.75, 2.0]]);
    let logits = x.matmul(&w)?;
    let probs = logits.softmax(-1)?;
    println!("eager logits:\n{logits}\nsoftmax:\n{probs}");

    // Graph: describe the computation once, run it with feeds.
    let g = Graph::new();
    let px = g.placeholder("x", DType::F32, [None, Some(3)])?;
    let pw = g.constant(w.clone())?;
    let graph_probs = ops::matmul(&px, &pw)?.softmax(-1)?.named("probs")?;
    let sess = Session::new(&g);
    let out = sess.run(&[&graph_probs], &[(&px, &x)])?;
    println!("graph softmax:\n{}", out[0]);
    println!("eager and graph agree bit for bit: {}", out[0].bitwise_eq(&probs));

    // Errors name the op, the shapes, and where the op was created.
    if let Err(e) = ops::matmul(&x, &x) {
        println!("as expected: {e}");
    }
    println!("graph:\n{}", g.to_dot());
    Ok(())
}

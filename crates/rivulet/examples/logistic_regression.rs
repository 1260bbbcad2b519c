//! Logistic regression the way a TensorFlow 1 program reads: build a graph
//! with placeholders and variables, then run the train op in a Session with
//! a feed dict, batch after batch.
//!
//! Classifies the bundled handwritten digits into "zero" versus "not zero".

use rivulet::data::load_digits;
use rivulet::nn::losses::binary_crossentropy_with_logits;
use rivulet::nn::Optimizer;
use rivulet::{ops, Axes, DType, Graph, Result, Session, Tensor, Variable};

/// Train and return the test accuracy.
pub fn run() -> Result<f64> {
    let digits = load_digits()?;
    // Labels: 1.0 for the digit zero, else 0.0.
    let is_zero = |y: &Tensor| ops::cast(&ops::equal(y, 0)?, DType::F32);
    let (train_y, test_y) = (is_zero(&digits.train_y)?, is_zero(&digits.test_y)?);

    // Build stage.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(64)])?;
    let y = g.placeholder("y", DType::F32, [None])?;
    let w = Variable::in_graph(&g, "w", &Tensor::zeros([64, 1], DType::F32)?, true)?;
    let b = Variable::in_graph(&g, "b", &Tensor::zeros([1], DType::F32)?, true)?;
    let logits = ops::reshape(&(&ops::matmul(&x, &w.read())? + &b.read())?, &[-1])?;
    let loss = binary_crossentropy_with_logits(&y, &logits)?;
    let train = Optimizer::sgd(0.5).minimize(&loss, &[&w, &b])?;
    let correct = ops::equal(&ops::greater(&logits, 0.0)?, &ops::greater(&y, 0.5)?)?;
    let accuracy = ops::mean(&ops::cast(&correct, DType::F32)?, Axes::All, false)?;

    // Run stage.
    let sess = Session::new(&g);
    sess.run_targets(&[&g.global_variables_initializer()?])?;
    let n = digits.train_x.shape()[0];
    for epoch in 0..20 {
        let mut total = 0.0;
        for start in (0..n).step_by(64) {
            let idx = Tensor::from((start as i64..(start + 64).min(n) as i64).collect::<Vec<_>>());
            let (bx, by) = (ops::gather(&digits.train_x, &idx, 0, 0)?, ops::gather(&train_y, &idx, 0, 0)?);
            let out = sess.run_with_targets(&[&loss], &[(&x, &bx), (&y, &by)], &[&train])?;
            total += out[0].to_scalar::<f32>()? as f64;
        }
        if epoch % 5 == 4 {
            println!("epoch {:>2}: mean batch loss {:.4}", epoch + 1, total / n.div_ceil(64) as f64);
        }
    }
    let acc = sess.run(&[&accuracy], &[(&x, &digits.test_x), (&y, &test_y)])?[0].to_scalar::<f32>()? as f64;
    println!("test accuracy (zero vs not zero): {acc:.4}");
    Ok(acc)
}

#[allow(dead_code)]
fn main() -> Result<()> {
    run().map(drop)
}

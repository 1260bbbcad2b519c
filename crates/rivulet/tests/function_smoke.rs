use rivulet::nn::Optimizer;
use rivulet::{function, ops, GradientTape, Tensor, Variable};

#[test]
fn traced_training_matches_eager() -> rivulet::Result<()> {
    let x = Tensor::from([[1.0f32, 2.0], [3.0, 4.0]]);
    let y = Tensor::from([[1.0f32], [0.0]]);
    let make = || -> rivulet::Result<(Variable, Optimizer)> {
        Ok((Variable::new("w", &Tensor::from([[0.5f32], [-0.25]]), true)?, Optimizer::adam(0.1)))
    };
    let (w1, opt1) = make()?;
    let step = |w: &Variable, opt: &Optimizer, x: &Tensor, y: &Tensor| -> rivulet::Result<Tensor> {
        let tape = GradientTape::new();
        let loss = ops::mean(&ops::square(&(&ops::matmul(x, &w.read())? - y)?)?, rivulet::Axes::All, false)?;
        let g = tape.gradient_vars(&loss, &[w])?;
        opt.apply_gradients(&[(g[0].clone().unwrap(), w)])?;
        Ok(loss)
    };
    let mut eager_losses = vec![];
    for _ in 0..5 {
        eager_losses.push(step(&w1, &opt1, &x, &y)?.to_scalar::<f32>()?);
    }
    let (w2, opt2) = make()?;
    let f = function(|args: &[Tensor]| Ok(vec![step(&w2, &opt2, &args[0], &args[1])?]));
    let mut traced_losses = vec![];
    for _ in 0..5 {
        traced_losses.push(f.call(&[&x, &y])?[0].to_scalar::<f32>()?);
    }
    assert_eq!(f.num_traces(), 1, "{:?}", f.trace_reasons());
    assert_eq!(eager_losses, traced_losses);
    assert!(w1.current().bitwise_eq(&w2.current()));
    Ok(())
}

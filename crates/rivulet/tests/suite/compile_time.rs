//! Long chains (unrolled loops, long simulations) and their gradients
//! compile and run correctly. Plan compilation is about linear in graph size:
//! the times are printed (`cargo test compile_time -- --nocapture`) but not
//! asserted, as tests make no timed assertions; a return of the quadratic
//! passes would make the 100k-node chains take hours instead of seconds.

use rivulet::{gradients, ops, DType, Graph, Session, Tensor, Unconnected};
use std::time::{Duration, Instant};

/// `x -> tanh(x + 0.5) -> tanh(. + 0.5) -> ...` with `nodes` add and tanh nodes in all.
fn chain(g: &Graph, nodes: usize) -> (Tensor, Tensor) {
    let x = g.placeholder("x", DType::F32, [4]).unwrap();
    let mut h = x.clone();
    for i in 0..nodes {
        h = if i % 2 == 0 { (&h + 0.5).unwrap() } else { ops::tanh(&h).unwrap() };
    }
    (x, h)
}

/// Times of one chain: building it, building its gradient, compiling and running it once.
struct Times {
    build: Duration,
    gradient: Duration,
    compile: Duration,
}

impl Times {
    fn print(&self, what: &str) {
        eprintln!(
            "{what}: build {:.3} s, gradient {:.3} s, compile + run {:.3} s",
            self.build.as_secs_f64(),
            self.gradient.as_secs_f64(),
            self.compile.as_secs_f64()
        );
    }
}

/// Build a chain (and optionally its gradient), compile and run it once.
fn compile_chain(nodes: usize, with_gradient: bool) -> Times {
    let t = Instant::now();
    let g = Graph::new();
    let (x, y) = chain(&g, nodes);
    let build = t.elapsed();
    let t = Instant::now();
    let mut fetches = vec![y.clone()];
    if with_gradient {
        let loss = ops::sum(&y, -1, false).unwrap();
        let dx = gradients(&[&loss], &[&x], None, Unconnected::None).unwrap().remove(0).unwrap();
        fetches.push(dx);
    }
    let gradient = t.elapsed();
    let refs: Vec<&Tensor> = fetches.iter().collect();
    let feed = Tensor::from([0.1f32, -0.2, 0.3, 2.0]);
    let sess = Session::new(&g);
    let t = Instant::now();
    let out = sess.run(&refs, &[(&x, &feed)]).unwrap();
    let compile = t.elapsed();
    // The fixed point of h -> tanh(h + 0.5) is 0.88122536...
    for v in out[0].to_vec::<f32>().unwrap() {
        assert!((v - 0.881_225_4).abs() < 1e-5, "chain converges to tanh's fixed point, got {v}");
    }
    if with_gradient {
        // Near the fixed point each step scales the gradient by 1 - h^2 (about 0.22): it vanishes.
        for v in out[1].to_vec::<f32>().unwrap() {
            assert!(v.is_finite() && v.abs() < 1e-6, "gradient through a long tanh chain vanishes, got {v}");
        }
    }
    Times { build, gradient, compile }
}

#[test]
fn chains_of_growing_length_and_a_gradient_compile_and_run() {
    for nodes in [2_000, 4_000, 8_000, 16_000] {
        compile_chain(nodes, false).print(&format!("chain of {nodes} nodes"));
    }
    compile_chain(20_000, true).print("chain of 20000 nodes and its gradient");
}

#[test]
fn a_chain_of_100k_nodes_and_its_gradient_compile_and_run() {
    compile_chain(100_000, false).print("chain of 100000 nodes");
    compile_chain(100_000, true).print("chain of 100000 nodes and its gradient");
}

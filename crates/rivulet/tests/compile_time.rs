//! Plan compilation scales about linearly with graph size: long chains
//! (unrolled loops, long simulations) and their gradients compile in
//! seconds. Times are printed; the assertions are generous bounds, so that a
//! return of quadratic or cubic behaviour fails without making the test
//! flaky on a busy machine.

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
    fn total(&self) -> Duration {
        self.build + self.gradient + self.compile
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
fn a_long_chain_and_its_gradient_compile_in_about_linear_time() {
    let mut compile = Vec::new();
    for nodes in [2_000, 4_000, 8_000, 16_000] {
        let t = compile_chain(nodes, false);
        t.print(&format!("chain of {nodes} nodes"));
        compile.push(t.compile.as_secs_f64());
    }
    let t = compile_chain(20_000, true);
    t.print("chain of 20000 nodes and its gradient");
    // About a second; the quadratic passes took minutes here.
    assert!(t.total() < Duration::from_secs(30), "20k chain with gradient took {:?}", t.total());
    // 8x the nodes may not cost 64x the time (noise allowed for: the small one is milliseconds).
    assert!(compile[3] < 40.0 * compile[0] + 0.5, "compile times {compile:?} grow faster than linearly");
}

#[test]
fn a_chain_of_100k_nodes_and_its_gradient_compile_in_seconds() {
    let t = compile_chain(100_000, false);
    t.print("chain of 100000 nodes");
    let tg = compile_chain(100_000, true);
    tg.print("chain of 100000 nodes and its gradient");
    assert!(t.total() < Duration::from_secs(60) && tg.total() < Duration::from_secs(120));
}

use rivulet::data::load_digits;
use rivulet::nn::*;
use rivulet::Tensor;

fn model(mode: ExecutionMode) -> Sequential {
    let mut m = Sequential::new(vec![
        Box::new(Dense::new(32, Activation::Relu)),
        Box::new(Dropout::new(0.2).unwrap()),
        Box::new(Dense::new(10, Activation::Linear)),
    ]);
    m.compile(
        Optimizer::adam(1e-3),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[Metric::SparseCategoricalAccuracy],
        mode,
    );
    m
}

fn weights(m: &Sequential) -> Vec<Vec<f32>> {
    m.get_weights()
        .unwrap()
        .iter()
        .filter(|(_, t)| t.dtype() == rivulet::DType::F32)
        .map(|(_, t)| t.to_vec::<f32>().unwrap())
        .collect()
}

#[test]
fn resume() {
    for mode in [ExecutionMode::Eager, ExecutionMode::Graph] {
        let d = load_digits().unwrap();
        let x = d.train_x.clone();
        let y = d.train_y.clone();
        let opts = |epochs, initial| FitOptions {
            epochs,
            initial_epoch: initial,
            batch_size: 64,
            verbose: Verbosity::Silent,
            seed: 3,
            ..FitOptions::default()
        };
        rivulet::set_random_seed(11);
        let a = model(mode);
        a.fit(&x, &y, &opts(2, 0)).unwrap();
        let straight = weights(&a);

        rivulet::set_random_seed(11);
        let b = model(mode);
        b.fit(&x, &y, &opts(1, 0)).unwrap();
        let data = b.checkpoint(1).unwrap();
        let dir = std::env::temp_dir().join(format!("riv_resume_{:?}", mode));
        let mgr = rivulet::io::CheckpointManager::new(&dir, 2);
        mgr.save(1, &data).unwrap();

        rivulet::set_random_seed(999);
        let c = model(mode);
        c.build(&x, &y).unwrap();
        let loaded = mgr.restore_latest().unwrap().unwrap();
        let epoch = c.restore(&loaded).unwrap();
        c.fit(&x, &y, &opts(2, epoch as usize)).unwrap();
        let resumed = weights(&c);
        assert_eq!(straight.len(), resumed.len());
        for (s, r) in straight.iter().zip(&resumed) {
            assert!(s.iter().zip(r).all(|(a, b)| a.to_bits() == b.to_bits()), "{mode:?} differs");
        }
        let _ = Tensor::scalar(0.0f32);
    }
}

//! Helpers shared by the integration tests.
#![allow(dead_code)]

use half::{bf16, f16};
use rivulet::{DType, ErrorKind, Result, Tensor};

/// The elements as f64, in logical row-major order (exact for every dtype
/// except i64 beyond 2^53).
pub fn values(t: &Tensor) -> Vec<f64> {
    match t.dtype() {
        DType::F32 => t.to_vec::<f32>().unwrap().into_iter().map(f64::from).collect(),
        DType::F64 => t.to_vec::<f64>().unwrap(),
        DType::F16 => t.to_vec::<f16>().unwrap().into_iter().map(f64::from).collect(),
        DType::BF16 => t.to_vec::<bf16>().unwrap().into_iter().map(f64::from).collect(),
        DType::I32 => t.to_vec::<i32>().unwrap().into_iter().map(f64::from).collect(),
        DType::I64 => t.to_vec::<i64>().unwrap().into_iter().map(|v| v as f64).collect(),
        DType::U8 => t.to_vec::<u8>().unwrap().into_iter().map(f64::from).collect(),
        DType::I8 => t.to_vec::<i8>().unwrap().into_iter().map(f64::from).collect(),
        DType::I16 => t.to_vec::<i16>().unwrap().into_iter().map(f64::from).collect(),
        DType::U16 => t.to_vec::<u16>().unwrap().into_iter().map(f64::from).collect(),
        DType::U32 => t.to_vec::<u32>().unwrap().into_iter().map(f64::from).collect(),
        DType::U64 => t.to_vec::<u64>().unwrap().into_iter().map(|v| v as f64).collect(),
        DType::Bool => t.to_vec::<bool>().unwrap().into_iter().map(|b| if b { 1.0 } else { 0.0 }).collect(),
        // Complex: the parts interleaved, re then im.
        DType::C64 => {
            t.to_vec::<rivulet::Complex<f32>>().unwrap().into_iter().flat_map(|z| [z.re as f64, z.im as f64]).collect()
        }
        DType::C128 => t.to_vec::<rivulet::Complex<f64>>().unwrap().into_iter().flat_map(|z| [z.re, z.im]).collect(),
    }
}

/// The elements of an integer or bool tensor, exactly.
pub fn ints(t: &Tensor) -> Vec<i128> {
    match t.dtype() {
        DType::I32 => t.to_vec::<i32>().unwrap().into_iter().map(i128::from).collect(),
        DType::I64 => t.to_vec::<i64>().unwrap().into_iter().map(i128::from).collect(),
        DType::U8 => t.to_vec::<u8>().unwrap().into_iter().map(i128::from).collect(),
        DType::I8 => t.to_vec::<i8>().unwrap().into_iter().map(i128::from).collect(),
        DType::I16 => t.to_vec::<i16>().unwrap().into_iter().map(i128::from).collect(),
        DType::U16 => t.to_vec::<u16>().unwrap().into_iter().map(i128::from).collect(),
        DType::U32 => t.to_vec::<u32>().unwrap().into_iter().map(i128::from).collect(),
        DType::U64 => t.to_vec::<u64>().unwrap().into_iter().map(i128::from).collect(),
        DType::Bool => t.to_vec::<bool>().unwrap().into_iter().map(i128::from).collect(),
        other => panic!("ints() of a {other} tensor"),
    }
}

/// The shape as a vector.
pub fn dims(t: &Tensor) -> Vec<usize> {
    t.shape().to_vec()
}

/// The kind of the error a call must return.
#[track_caller]
pub fn kind<T: std::fmt::Debug>(r: Result<T>) -> ErrorKind {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.kind(),
    }
}

/// Row-major strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// Row-major multi-index of flat position `i` in `shape`.
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

/// Flat row-major position of multi-index `idx` in `shape`.
pub fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(strides(shape)).map(|(i, s)| i * s).sum()
}

/// Round half to even, written out (not `round_ties_even`).
pub fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (r - x).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

/// Round `v` to the nearest binary float with `p` significant bits, smallest
/// normal exponent `emin` and largest finite value `max` (ties to even,
/// overflow to infinity, gradual underflow), written out so that it does not
/// depend on the `half` crate.
pub fn round_binary(v: f64, p: i32, emin: i32, max: f64) -> f64 {
    if !v.is_finite() || v == 0.0 {
        return v;
    }
    let a = v.abs();
    if a < 2f64.powi(-1000) {
        return 0.0f64.copysign(v);
    }
    let e = ((a.to_bits() >> 52) as i32) - 1023;
    let quantum = 2f64.powi(e.max(emin) - (p - 1));
    let r = round_half_even(a / quantum) * quantum;
    let r = if r > max { f64::INFINITY } else { r };
    r.copysign(v)
}

/// Round an f64 to the nearest value of a float dtype.
pub fn round_to(dtype: DType, v: f64) -> f64 {
    match dtype {
        DType::F32 => f64::from(v as f32),
        DType::F64 => v,
        DType::F16 => round_binary(v, 11, -14, 65504.0),
        DType::BF16 => round_binary(v, 8, -126, (2.0 - 2f64.powi(-7)) * 2f64.powi(127)),
        other => panic!("round_to {other}"),
    }
}

/// SplitMix64: small, deterministic pseudo-random numbers for test inputs,
/// the same on every machine. Test files add their own drawing helpers.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform on [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform on [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() <= p
    }
    /// Uniform on `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Set in the child runs of [`rerun_at_lower_simd_levels`].
pub const SIMD_RERUN: &str = "RIVULET_SIMD_RERUN";

/// Runs the test `name` (its full path, `module::test`) alone in a child
/// process of this test binary, and fails if it fails. For the few tests that
/// change process-wide state (the global random seed) and assert on it: in
/// the shared binary other tests run beside them on other threads. Returns
/// `true` in the child, where the caller then does the work.
pub fn run_alone(name: &str) -> bool {
    if std::env::var_os(RUN_ALONE).is_some() {
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(&exe)
        .args([name, "--exact", "--test-threads=1"])
        .env(RUN_ALONE, name)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{name}, run alone:\n{text}");
    assert!(text.contains("test result: ok. 1 passed"), "{name} did not run in its child:\n{text}");
    false
}

/// Set in the child run of [`run_alone`].
const RUN_ALONE: &str = "RIVULET_TEST_RUN_ALONE";

/// Runs this test binary again with `RIVULET_SIMD=avx2` and `=scalar`,
/// limited to the tests matching `filters`, and fails if any of them fails:
/// every instruction set's kernels (Rivulet's and gemm's) are tested on one
/// machine. Inside such a rerun it returns at once.
pub fn rerun_at_lower_simd_levels(filters: &[&str]) {
    if std::env::var_os(SIMD_RERUN).is_some() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for level in ["avx2", "scalar"] {
        let out = std::process::Command::new(&exe)
            .args(filters)
            .arg("simd_level_is_the_one_asked_for")
            .env("RIVULET_SIMD", level)
            .env(SIMD_RERUN, level)
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "with RIVULET_SIMD={level}:\n{text}");
        let passed: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("test result: ok. "))
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(passed >= 2, "with RIVULET_SIMD={level}, only {passed} tests ran:\n{text}");
        println!("RIVULET_SIMD={level}: {passed} tests passed");
    }
}

/// In a rerun of [`rerun_at_lower_simd_levels`], the level asked for is in
/// force: `scalar` always, `avx2` unless this CPU lacks it (the library then
/// falls back to `scalar`); never the AVX-512 it would pick by itself.
pub fn check_simd_level() {
    let Ok(level) = std::env::var(SIMD_RERUN) else { return };
    #[cfg(target_arch = "x86_64")]
    {
        let got = rivulet::simd_level();
        let allowed: &[&str] = if level == "avx2" { &["avx2", "scalar"] } else { &["scalar"] };
        assert!(allowed.contains(&got), "RIVULET_SIMD={level} ran at {got}");
    }
}

/// The two tests a binary needs to run its tests (those matching the
/// filters) at every instruction-set level: [`rerun_at_lower_simd_levels`]
/// and, in the reruns, [`check_simd_level`].
macro_rules! tests_at_every_simd_level {
    ($($filter:expr),+) => {
        #[test]
        fn every_simd_level_passes() {
            $crate::common::rerun_at_lower_simd_levels(&[$($filter),+]);
        }

        #[test]
        fn simd_level_is_the_one_asked_for() {
            $crate::common::check_simd_level();
        }
    };
}

/// A contiguous copy made from the elements alone (`from_vec(to_vec())`).
pub fn contiguous_copy(t: &Tensor) -> Tensor {
    let s = t.shape().clone();
    match t.dtype() {
        DType::F32 => Tensor::from_vec(t.to_vec::<f32>().unwrap(), s),
        DType::F64 => Tensor::from_vec(t.to_vec::<f64>().unwrap(), s),
        DType::F16 => Tensor::from_vec(t.to_vec::<f16>().unwrap(), s),
        DType::BF16 => Tensor::from_vec(t.to_vec::<bf16>().unwrap(), s),
        DType::I32 => Tensor::from_vec(t.to_vec::<i32>().unwrap(), s),
        DType::I64 => Tensor::from_vec(t.to_vec::<i64>().unwrap(), s),
        DType::U8 => Tensor::from_vec(t.to_vec::<u8>().unwrap(), s),
        DType::I8 => Tensor::from_vec(t.to_vec::<i8>().unwrap(), s),
        DType::I16 => Tensor::from_vec(t.to_vec::<i16>().unwrap(), s),
        DType::U16 => Tensor::from_vec(t.to_vec::<u16>().unwrap(), s),
        DType::U32 => Tensor::from_vec(t.to_vec::<u32>().unwrap(), s),
        DType::U64 => Tensor::from_vec(t.to_vec::<u64>().unwrap(), s),
        DType::Bool => Tensor::from_vec(t.to_vec::<bool>().unwrap(), s),
        DType::C64 => Tensor::from_vec(t.to_vec::<rivulet::Complex<f32>>().unwrap(), s),
        DType::C128 => Tensor::from_vec(t.to_vec::<rivulet::Complex<f64>>().unwrap(), s),
    }
    .unwrap()
}

/// A fresh directory, removed when dropped (also when the test fails).
pub struct TempDir(pub std::path::PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh directory `rivulet-<area>-<pid>-<name>` under the system's temporary one.
pub fn fresh_dir(area: &str, name: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("rivulet-{area}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

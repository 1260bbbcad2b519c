//! Run a closure compiled for the best vector instruction set of this CPU.
//!
//! Kernels are written as plain loops over slices; inside [`vectorize`] the
//! compiler vectorises them for AVX-512 or AVX2 where the CPU has it. The
//! loops never rely on reassociation, so every path gives the same bits.

#[cfg(target_arch = "x86_64")]
use std::sync::atomic::{AtomicU8, Ordering};

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Level {
    Unknown = 0,
    Base = 1,
    Avx2 = 2,
    Avx512 = 3,
}

#[cfg(target_arch = "x86_64")]
static LEVEL: AtomicU8 = AtomicU8::new(Level::Unknown as u8);

#[cfg(target_arch = "x86_64")]
fn detect() -> Level {
    let forced = std::env::var("RIVULET_SIMD").ok();
    let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    let avx512 = avx2
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("avx512vl");
    match forced.as_deref() {
        Some("base") => Level::Base,
        Some("avx2") if avx2 => Level::Avx2,
        _ if avx512 => Level::Avx512,
        _ if avx2 => Level::Avx2,
        _ => Level::Base,
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn level() -> Level {
    match LEVEL.load(Ordering::Relaxed) {
        1 => Level::Base,
        2 => Level::Avx2,
        3 => Level::Avx512,
        _ => {
            let l = detect();
            LEVEL.store(l as u8, Ordering::Relaxed);
            l
        }
    }
}

/// The instruction set [`vectorize`] uses: `avx512`, `avx2` or `base`
/// (`RIVULET_SIMD=avx2|base` forces a lower one).
pub fn simd_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        match level() {
            Level::Avx512 => "avx512",
            Level::Avx2 => "avx2",
            _ => "base",
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        "base"
    }
}

/// Whether kernels may use AVX-512 (F, BW, DQ, VL) intrinsics directly: the
/// level [`vectorize`] uses, so `RIVULET_SIMD` lowers both.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx512() -> bool {
    level() == Level::Avx512
}

/// A loop to compile once per instruction set. `run` must be
/// `#[inline(always)]`, so that its body is compiled inside the
/// target-feature functions below (a closure would only be inlined when the
/// optimiser finds it cheap enough, and large kernels would stay scalar).
pub(crate) trait Kernel {
    type Output;
    fn run(self) -> Self::Output;
}

/// Run kernel `k` compiled with the widest vector extension the CPU supports.
#[inline(always)]
pub(crate) fn vectorize<K: Kernel>(k: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    {
        match level() {
            // SAFETY: the CPU supports these features (checked in `detect`).
            Level::Avx512 => unsafe { run_avx512(k) },
            // SAFETY: as above.
            Level::Avx2 => unsafe { run_avx2(k) },
            _ => k.run(),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        k.run()
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,bmi1,bmi2,lzcnt,popcnt")]
unsafe fn run_avx512<K: Kernel>(k: K) -> K::Output {
    k.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,bmi1,bmi2,lzcnt,popcnt")]
unsafe fn run_avx2<K: Kernel>(k: K) -> K::Output {
    k.run()
}

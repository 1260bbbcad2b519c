//! Run a closure compiled for the best vector instruction set of this CPU.
//!
//! Kernels are written as plain loops over slices; inside [`vectorize`] the
//! compiler vectorises them for AVX-512 or AVX2 where the CPU has it. The
//! loops never rely on reassociation, so every path gives the same bits.
//!
//! `RIVULET_SIMD=avx512|avx2|scalar` lowers the level, for Rivulet's kernels
//! and for matrix products alike (see `matmul`), so that every path can be
//! measured and tested on one machine. Matrix products are the exception
//! to "same bits": gemm's AVX-512, AVX2 and scalar kernels block the
//! depth differently.

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
    // Everything `run_avx2` enables (a VM may hide BMI or F16C beside AVX2).
    let avx2 = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
        && is_x86_feature_detected!("bmi1")
        && is_x86_feature_detected!("bmi2")
        && is_x86_feature_detected!("lzcnt")
        && is_x86_feature_detected!("popcnt");
    let avx512 = avx2
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("avx512vl");
    let best = if avx512 {
        Level::Avx512
    } else if avx2 {
        Level::Avx2
    } else {
        Level::Base
    };
    let wanted = match forced.as_deref() {
        None | Some("") => return best,
        Some("scalar" | "base") => Level::Base,
        Some("avx2") => Level::Avx2,
        Some("avx512") => Level::Avx512,
        Some(other) => {
            eprintln!("rivulet: RIVULET_SIMD={other:?} is not one of avx512, avx2, scalar; ignored");
            return best;
        }
    };
    if wanted as u8 > best as u8 {
        eprintln!("rivulet: RIVULET_SIMD asks for a level this CPU lacks; using {}", name(best));
        return best;
    }
    wanted
}

#[cfg(target_arch = "x86_64")]
fn name(l: Level) -> &'static str {
    match l {
        Level::Avx512 => "avx512",
        Level::Avx2 => "avx2",
        _ => "scalar",
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

/// The instruction set CPU kernels use: `avx512`, `avx2` or `scalar` on
/// x86-64 (`RIVULET_SIMD` forces a lower one), `native` elsewhere.
pub fn simd_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        name(level())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        "native"
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

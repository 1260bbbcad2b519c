//! CUDA C source for a fused elementwise program: the same
//! [`FusedProgram`] the CPU kernel interprets, written out as one kernel
//! that NVRTC compiles (once per [`KernelSource::key`]).
//!
//! Every kernel has one ABI, [`FusedParams`] passed by value: input
//! pointers, the output, an error flag, the element count, the output's
//! dimensions and each input's strides in elements (0 where it broadcasts).
//! So one launcher serves every program, and a kernel compiled for a rank
//! and a set of dtypes serves every shape of that rank.
//!
//! Semantics are the CPU backend's, bitwise wherever the arithmetic is
//! IEEE's (so NVRTC must compile with `--fmad=false`: no contraction into
//! fused multiply-adds): f16/bf16 compute in f32 and round back (to
//! nearest, ties to even, in the prelude, without CUDA headers);
//! integers wrap; an integer division by zero or a negative integer power
//! sets the error flag (the launcher turns it into the op's error); a float
//! to integer cast saturates and takes NaN to 0, as Rust's `as` does.

use crate::error::{Error, Result};
use crate::op::elementwise::{BinaryOp, UnaryOp, SELU_ALPHA, SELU_SCALE};
use crate::op::fused::{FusedProgram, Instr};
use crate::op::Meta;
use crate::tensor::{DType, Scalar};
use std::fmt::Write;

/// Most inputs a generated kernel takes (more run unfused).
pub(crate) const MAX_INPUTS: usize = 16;
/// Highest output rank a generated kernel indexes.
pub(crate) const MAX_RANK: usize = 8;

/// The kernel's one argument; its C twin is in [`PRELUDE`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct FusedParams {
    pub inputs: [*const u8; MAX_INPUTS],
    pub out: *mut u8,
    /// Set to 1 by an integer division by zero, 2 by a negative integer power.
    pub error: *mut i32,
    /// Output elements.
    pub n: i64,
    pub dims: [i64; MAX_RANK],
    /// Input `k`'s stride along output dimension `d`, in elements.
    pub strides: [[i64; MAX_RANK]; MAX_INPUTS],
}

impl FusedParams {
    /// Parameters for an output of `dims` and inputs at `inputs`, each with
    /// its strides along the output's dimensions (0 where it broadcasts).
    pub fn new(
        out: *mut u8,
        error: *mut i32,
        dims: &[usize],
        inputs: &[(*const u8, Vec<isize>)],
    ) -> Result<FusedParams> {
        if dims.len() > MAX_RANK || inputs.len() > MAX_INPUTS {
            return Err(Error::unimplemented(format!(
                "a generated kernel takes rank {MAX_RANK} and {MAX_INPUTS} inputs at most, got rank {} and {} inputs",
                dims.len(),
                inputs.len()
            )));
        }
        let mut p = FusedParams {
            inputs: [std::ptr::null(); MAX_INPUTS],
            out,
            error,
            n: dims.iter().product::<usize>() as i64,
            dims: [1; MAX_RANK],
            strides: [[0; MAX_RANK]; MAX_INPUTS],
        };
        for (d, &n) in dims.iter().enumerate() {
            p.dims[d] = n as i64;
        }
        for (k, (ptr, strides)) in inputs.iter().enumerate() {
            if strides.len() != dims.len() {
                return Err(Error::shape(format!(
                    "input {k} has {} strides for an output of rank {}",
                    strides.len(),
                    dims.len()
                )));
            }
            p.inputs[k] = *ptr;
            for (d, &s) in strides.iter().enumerate() {
                p.strides[k][d] = s as i64;
            }
        }
        Ok(p)
    }
}

/// Generated source and the name of its kernel.
#[derive(Clone, Debug)]
pub(crate) struct KernelSource {
    pub name: String,
    pub source: String,
    /// A hash of the kernel's body (it names the kernel; the backend's
    /// caches hash the whole source).
    #[cfg_attr(not(test), allow(dead_code))]
    pub key: u64,
}

/// FNV-1a: a hash that is the same in every build (kernel caches on disk
/// are named by it, so not `DefaultHasher`).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Shared by every kernel: the parameter block, bit casts and the f16/bf16
/// conversions.
pub(crate) const PRELUDE: &str = r#"
#define RV_MAX_INPUTS 16
#define RV_MAX_RANK 8
struct RvParams {
    const void* inputs[RV_MAX_INPUTS];
    void* out;
    int* error;
    long long n;
    long long dims[RV_MAX_RANK];
    long long strides[RV_MAX_INPUTS][RV_MAX_RANK];
};
typedef unsigned short rv_f16;
typedef unsigned short rv_bf16;
__device__ __forceinline__ float rv_bits_f32(unsigned int u) { return __uint_as_float(u); }
__device__ __forceinline__ double rv_bits_f64(unsigned long long u) { return __longlong_as_double((long long)u); }
__device__ __forceinline__ float rv_from_bf16(rv_bf16 h) { return __uint_as_float(((unsigned int)h) << 16); }
__device__ __forceinline__ rv_bf16 rv_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (rv_bf16)((u >> 16) | 0x40u);
    return (rv_bf16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
__device__ __forceinline__ float rv_from_f16(rv_f16 h) {
    unsigned int sign = ((unsigned int)(h & 0x8000u)) << 16;
    unsigned int exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1fu) return __uint_as_float(sign | 0x7f800000u | (man << 13));
    if (exp == 0u) {
        float m = (float)man * 5.9604644775390625e-8f;
        return sign ? -m : m;
    }
    return __uint_as_float(sign | ((exp + 112u) << 23) | (man << 13));
}
__device__ __forceinline__ rv_f16 rv_to_f16(float f) {
    unsigned int u = __float_as_uint(f);
    unsigned int sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (rv_f16)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) return (rv_f16)(sign | 0x7c00u);
    if (a < 0x38800000u) {
        /* A subnormal half: add 0.5 (exponent 126) so the FPU rounds the bits out, ties to even. */
        float r = __uint_as_float(a) + 0.5f;
        return (rv_f16)(sign | (__float_as_uint(r) - 0x3f000000u));
    }
    unsigned int odd = (a >> 13) & 1u;
    a += 0xc8000fffu + odd;
    return (rv_f16)(sign | (a >> 13));
}
"#;

/// The C type a register of `dtype` computes in.
fn compute_type(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => "float",
        DType::F64 => "double",
        DType::I32 => "int",
        DType::I64 => "long long",
        DType::U8 => "unsigned char",
        DType::Bool => "bool",
        DType::I8 => "signed char",
        DType::I16 => "short",
        DType::U16 => "unsigned short",
        DType::U32 => "unsigned int",
        DType::U64 => "unsigned long long",
        // Complex values never reach generated code (ops on them run on
        // the host); the storage type keeps the element size.
        DType::C64 => "float2",
        DType::C128 => "double2",
    }
}

/// The C type an element of `dtype` is stored as.
fn storage_type(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "rv_f16",
        DType::BF16 => "rv_bf16",
        d => compute_type(d),
    }
}

/// An expression loading element `idx` of `ptr` (of `dtype`) as its compute type.
fn load(dtype: DType, ptr: &str, idx: &str) -> String {
    match dtype {
        DType::F16 => format!("rv_from_f16(((const rv_f16*){ptr})[{idx}])"),
        DType::BF16 => format!("rv_from_bf16(((const rv_bf16*){ptr})[{idx}])"),
        d => format!("((const {}*){ptr})[{idx}]", storage_type(d)),
    }
}

/// A constant of `dtype`, exactly (floats by their bits: NaN and inf too).
fn literal(value: Scalar, dtype: DType) -> String {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => {
            // A f16/bf16 constant is its rounded value, like a stored element.
            let v = value.as_f64() as f32;
            let v = match dtype {
                DType::F16 => half::f16::from_f32(v).to_f32(),
                DType::BF16 => half::bf16::from_f32(v).to_f32(),
                _ => v,
            };
            format!("rv_bits_f32(0x{:08x}u)", v.to_bits())
        }
        DType::F64 => format!("rv_bits_f64(0x{:016x}ull)", value.as_f64().to_bits()),
        DType::Bool => (value.as_f64() != 0.0).to_string(),
        DType::I32 => format!("((int){})", value_i64(value) as i32),
        DType::I64 => match value_i64(value) {
            i64::MIN => "(-9223372036854775807ll - 1)".to_string(),
            v => format!("{v}ll"),
        },
        DType::U8 => format!("((unsigned char){})", value_i64(value) as u8),
        DType::I8 => format!("((signed char){})", value_i64(value) as i8),
        DType::I16 => format!("((short){})", value_i64(value) as i16),
        DType::U16 => format!("((unsigned short){})", value_i64(value) as u16),
        DType::U32 => format!("((unsigned int){}u)", value_i64(value) as u32),
        DType::U64 => format!("((unsigned long long){}ull)", value_i64(value) as u64),
        DType::C64 => format!("make_float2(rv_bits_f32(0x{:08x}u), 0.0f)", (value.as_f64() as f32).to_bits()),
        DType::C128 => format!("make_double2(rv_bits_f64(0x{:016x}ull), 0.0)", value.as_f64().to_bits()),
    }
}

fn value_i64(value: Scalar) -> i64 {
    match value {
        Scalar::Bool(b) => b as i64,
        Scalar::I64(v) => v,
        Scalar::F64(v) => v as i64,
    }
}

/// The unsigned twin of an integer compute type, for wrapping arithmetic.
fn unsigned_of(dtype: DType) -> &'static str {
    match dtype {
        DType::U8 => "unsigned char",
        DType::I64 | DType::U64 => "unsigned long long",
        // 8- and 16-bit types compute in unsigned int: their promotion to
        // int could overflow a product (65535 * 65535).
        _ => "unsigned int",
    }
}

/// `f(x)` for a register of `dtype` (the operand's and the result's, except
/// for the predicates, whose result is bool).
fn unary(f: UnaryOp, dtype: DType, x: &str) -> Result<String> {
    use UnaryOp::*;
    if dtype == DType::Bool {
        return match f {
            LogicalNot => Ok(format!("!{x}")),
            _ => Err(Error::dtype(format!("{} does not take bool", f.name()))),
        };
    }
    if dtype.is_float() {
        let sfx = if compute_type(dtype) == "float" { "f" } else { "" };
        let c = |v: f64| if sfx == "f" { format!("{:?}f", v as f32) } else { format!("{v:?}") };
        let call = |name: &str| format!("{name}{sfx}({x})");
        // The special functions compute in double, as the CPU does.
        let special = |e: &str| if sfx == "f" { format!("((float){e})") } else { e.to_string() };
        return Ok(match f {
            Neg => format!("(-{x})"),
            Abs => call("fabs"),
            Sign => format!("({x} > 0 ? {} : ({x} < 0 ? {} : ({x} == 0 ? {} : {x})))", c(1.0), c(-1.0), c(0.0)),
            Square => format!("({x} * {x})"),
            Relu => format!("(({x} > 0 || isnan({x})) ? {x} : {})", c(0.0)),
            Relu6 => format!("({x} < 0 ? {} : ({x} > 6 ? {} : {x}))", c(0.0), c(6.0)),
            Exp => call("exp"),
            Expm1 => call("expm1"),
            Log => call("log"),
            Log1p => call("log1p"),
            Sqrt => call("sqrt"),
            Rsqrt => format!("({} / sqrt{sfx}({x}))", c(1.0)),
            Reciprocal => format!("({} / {x})", c(1.0)),
            Sin => call("sin"),
            Cos => call("cos"),
            Tan => call("tan"),
            Tanh => call("tanh"),
            Sigmoid => format!("({one} / ({one} + exp{sfx}(-{x})))", one = c(1.0)),
            Elu => format!("({x} > 0 ? {x} : expm1{sfx}({x}))"),
            Selu => format!("({} * ({x} > 0 ? {x} : {} * expm1{sfx}({x})))", c(SELU_SCALE), c(SELU_ALPHA)),
            Gelu => {
                format!("({} * {x} * ({} + erf{sfx}({x} * {})))", c(0.5), c(1.0), c(std::f64::consts::FRAC_1_SQRT_2))
            }
            Softplus => {
                format!("(isnan({x}) ? {x} : fmax{sfx}({x}, {}) + log1p{sfx}(exp{sfx}(-fabs{sfx}({x}))))", c(0.0))
            }
            Erf => call("erf"),
            Lgamma => special(&format!("lgamma((double){x})")),
            Digamma => special(&format!("rv_sp_digamma((double){x})")),
            Erfinv => special(&format!("rv_sp_erfinv((double){x})")),
            Ndtri => special(&format!("rv_sp_ndtri((double){x})")),
            BesselI0e => special(&format!("rv_sp_bessel((double){x}, 0)")),
            BesselI1e => special(&format!("rv_sp_bessel((double){x}, 1)")),
            Erfc => call("erfc"),
            Sinh => call("sinh"),
            Cosh => call("cosh"),
            Asin => call("asin"),
            Acos => call("acos"),
            Atan => call("atan"),
            Asinh => call("asinh"),
            Acosh => call("acosh"),
            Atanh => call("atanh"),
            Floor => call("floor"),
            Ceil => call("ceil"),
            Round => call("rint"),
            IsNan => format!("((bool)isnan({x}))"),
            IsFinite => format!("((bool)isfinite({x}))"),
            IsInf => format!("((bool)isinf({x}))"),
            LogicalNot => return Err(Error::dtype(format!("logical_not needs bool, got {dtype}"))),
        });
    }
    // Integers: wrapping, through the unsigned twin (no undefined overflow).
    let t = compute_type(dtype);
    let u = unsigned_of(dtype);
    let unsigned = dtype.is_unsigned();
    Ok(match f {
        Neg => format!("(({t})(({u})0 - ({u}){x}))"),
        Abs if unsigned => x.to_string(),
        Abs => format!("({x} < 0 ? (({t})(({u})0 - ({u}){x})) : {x})"),
        Sign => format!("(({t})(({x} > 0) - ({x} < 0)))"),
        Square => format!("(({t})(({u}){x} * ({u}){x}))"),
        Relu => format!("({x} > 0 ? {x} : ({t})0)"),
        Relu6 => format!("({x} > 6 ? ({t})6 : ({x} > 0 ? {x} : ({t})0))"),
        Floor | Ceil | Round => x.to_string(),
        LogicalNot => format!("(({t})({x} == 0))"),
        _ => return Err(Error::dtype(format!("{} needs a floating-point dtype, got {dtype}", f.name()))),
    })
}

/// `f(a, b)` for operands of `dtype` (comparisons give bool). Integer
/// division errors set `*p.error` and give 0.
fn binary(f: BinaryOp, dtype: DType, a: &str, b: &str) -> Result<String> {
    use BinaryOp::*;
    let cmp = |op: &str| format!("({a} {op} {b})");
    match f {
        Equal => return Ok(cmp("==")),
        NotEqual => return Ok(cmp("!=")),
        Less => return Ok(cmp("<")),
        LessEqual => return Ok(cmp("<=")),
        Greater => return Ok(cmp(">")),
        GreaterEqual => return Ok(cmp(">=")),
        LogicalAnd if dtype == DType::Bool => return Ok(cmp("&&")),
        LogicalOr if dtype == DType::Bool => return Ok(cmp("||")),
        _ => {}
    }
    if dtype == DType::Bool {
        return Err(Error::dtype(format!("{} does not take bool", f.name())));
    }
    if dtype.is_float() {
        let sfx = if compute_type(dtype) == "float" { "f" } else { "" };
        let nan = if sfx == "f" { "rv_bits_f32(0x7fc00000u)" } else { "rv_bits_f64(0x7ff8000000000000ull)" };
        let zero = if sfx == "f" { "0.0f" } else { "0.0" };
        let special = |e: &str| if sfx == "f" { format!("((float){e})") } else { e.to_string() };
        let ln2 =
            if sfx == "f" { format!("{:?}f", std::f32::consts::LN_2) } else { format!("{:?}", std::f64::consts::LN_2) };
        return Ok(match f {
            Add => cmp("+"),
            Sub => cmp("-"),
            Mul => cmp("*"),
            Div => cmp("/"),
            FloorDiv => format!("floor{sfx}({a} / {b})"),
            FloorMod => format!("rv_fmod_floor{sfx}({a}, {b})"),
            Pow => format!("pow{sfx}({a}, {b})"),
            TruncateMod => format!("fmod{sfx}({a}, {b})"),
            Zeta => special(&format!("rv_sp_zeta((double){a}, (double){b})")),
            Polygamma => special(&format!("rv_sp_polygamma((double){a}, (double){b})")),
            Igamma => special(&format!("rv_sp_igamma((double){a}, (double){b})")),
            Igammac => special(&format!("rv_sp_igammac((double){a}, (double){b})")),
            IgammaGradA => special(&format!("rv_sp_igamma_grad_a((double){a}, (double){b})")),
            NextAfter => format!("nextafter{sfx}({a}, {b})"),
            MulNoNan => format!("({b} == 0 ? {zero} : {a} * {b})"),
            DivNoNan => format!("({b} == 0 ? {zero} : {a} / {b})"),
            Xlogy => format!("({a} == 0 ? {zero} : {a} * log{sfx}({b}))"),
            Xlog1py => format!("({a} == 0 ? {zero} : {a} * log1p{sfx}({b}))"),
            Xdivy => format!("({a} == 0 ? {zero} : {a} / {b})"),
            Maximum => format!("((isnan({a}) || isnan({b})) ? {nan} : fmax{sfx}({a}, {b}))"),
            Minimum => format!("((isnan({a}) || isnan({b})) ? {nan} : fmin{sfx}({a}, {b}))"),
            Atan2 => format!("atan2{sfx}({a}, {b})"),
            Hypot => format!("hypot{sfx}({a}, {b})"),
            LogAddExp => format!(
                "({a} == {b} ? {a} + {ln2} : ((isnan({a}) || isnan({b})) ? {nan} : \
                 fmax{sfx}({a}, {b}) + log1p{sfx}(exp{sfx}(-fabs{sfx}({a} - {b})))))"
            ),
            _ => return Err(Error::dtype(format!("{} needs bool, got {dtype}", f.name()))),
        });
    }
    let t = compute_type(dtype);
    let u = unsigned_of(dtype);
    let wrap = |op: &str| format!("(({t})(({u}){a} {op} ({u}){b}))");
    Ok(match f {
        Add => wrap("+"),
        Sub => wrap("-"),
        Mul => wrap("*"),
        Div => format!("rv_div_{}({a}, {b}, p.error)", int_suffix(dtype)),
        FloorDiv => format!("rv_floordiv_{}({a}, {b}, p.error)", int_suffix(dtype)),
        FloorMod => format!("rv_floormod_{}({a}, {b}, p.error)", int_suffix(dtype)),
        TruncateMod => format!("rv_truncmod_{}({a}, {b}, p.error)", int_suffix(dtype)),
        Pow => format!("rv_pow_{}({a}, {b}, p.error)", int_suffix(dtype)),
        Maximum => format!("({a} > {b} ? {a} : {b})"),
        Minimum => format!("({a} < {b} ? {a} : {b})"),
        LogicalAnd => format!("(({t})({a} != 0 && {b} != 0))"),
        LogicalOr => format!("(({t})({a} != 0 || {b} != 0))"),
        _ => return Err(Error::dtype(format!("{} needs a floating-point dtype, got {dtype}", f.name()))),
    })
}

fn int_suffix(dtype: DType) -> &'static str {
    dtype.name()
}

/// The integer dtypes, each with its helpers in every generated kernel.
pub(crate) const INT_DTYPES: [DType; 8] =
    [DType::I32, DType::I64, DType::U8, DType::I8, DType::I16, DType::U16, DType::U32, DType::U64];

/// Integer division helpers of one type: truncating and floor division,
/// floor modulo (the divisor's sign) and powers, wrapping, with the error
/// flag for a zero divisor (1) or a negative exponent (2).
fn int_helpers(dtype: DType) -> String {
    let (t, u, s) = (compute_type(dtype), unsigned_of(dtype), int_suffix(dtype));
    let signed = !dtype.is_unsigned();
    // x / -1 and x % -1 overflow for the most negative x: negate, wrapping.
    let minus_one =
        if signed { format!("if (y == ({t})-1) return ({t})(({u})0 - ({u})x);\n    ") } else { String::new() };
    let minus_one_mod = if signed { format!("if (y == ({t})-1) return ({t})0;\n    ") } else { String::new() };
    let floor_fix = if signed { "if (r != 0 && ((r < 0) != (y < 0))) q -= 1;\n    " } else { "" };
    let mod_fix = if signed { "if (r != 0 && ((r < 0) != (y < 0))) r += y;\n    " } else { "" };
    let negative = if signed { "if (y < 0) { atomicExch(err, 2); return 0; }\n    " } else { "" };
    format!(
        r#"
__device__ __forceinline__ {t} rv_div_{s}({t} x, {t} y, int* err) {{
    if (y == 0) {{ atomicExch(err, 1); return 0; }}
    {minus_one}return x / y;
}}
__device__ __forceinline__ {t} rv_floordiv_{s}({t} x, {t} y, int* err) {{
    if (y == 0) {{ atomicExch(err, 1); return 0; }}
    {minus_one}{t} q = x / y, r = x % y;
    {floor_fix}return q;
}}
__device__ __forceinline__ {t} rv_floormod_{s}({t} x, {t} y, int* err) {{
    if (y == 0) {{ atomicExch(err, 1); return 0; }}
    {minus_one_mod}{t} r = x % y;
    {mod_fix}return r;
}}
__device__ __forceinline__ {t} rv_truncmod_{s}({t} x, {t} y, int* err) {{
    if (y == 0) {{ atomicExch(err, 1); return 0; }}
    {minus_one_mod}return x % y;
}}
__device__ __forceinline__ {t} rv_pow_{s}({t} x, {t} y, int* err) {{
    {negative}{u} acc = 1, base = ({u})x;
    for ({u} e = ({u})y; e > 0; e >>= 1) {{
        if (e & 1) acc = acc * base;
        base = base * base;
    }}
    return ({t})acc;
}}
"#
    )
}

/// The special functions of `backend::special` in C (double precision; f32
/// computes in double and rounds, as the CPU does), included in a kernel
/// only when it calls one of them (`rv_sp_`).
pub(crate) const SPECIAL_HELPERS: &str = r#"
#define RV_PI 3.141592653589793
#define RV_INF __longlong_as_double(0x7ff0000000000000ll)
__device__ double rv_sp_digamma(double x) {
    if (isnan(x) || x == -RV_INF || (x <= 0 && x == floor(x))) return __longlong_as_double(0x7ff8000000000000ll);
    if (x == RV_INF) return x;
    double acc = 0;
    if (x < 0) { acc = -RV_PI / tan(RV_PI * (x - rint(x))); x = 1 - x; }
    while (x < 10) { acc -= 1 / x; x += 1; }
    double f = 1 / (x * x);
    double s = f * (1.0 / 12 - f * (1.0 / 120 - f * (1.0 / 252 - f * (1.0 / 240 - f * (1.0 / 132 - f * (691.0 / 32760 - f / 12))))));
    return acc + log(x) - 0.5 / x - s;
}
__device__ double rv_sp_zeta(double x, double q) {
    const double c[12] = {1.0 / 12, -1.0 / 720, 1.0 / 30240, -1.0 / 1209600, 1.0 / 47900160,
        -691.0 / 1307674368000.0, 1.0 / 74724249600.0, -3617.0 / 10670622842880000.0,
        43867.0 / 5109094217170944000.0, -174611.0 / 802857662698291200000.0,
        77683.0 / 14101100039391805440000.0, -236364091.0 / 1693824136731743669452800000.0};
    double nan = __longlong_as_double(0x7ff8000000000000ll);
    if (isnan(x) || isnan(q) || x < 1) return nan;
    if (x == 1) return RV_INF;
    if (q <= 0) { if (q == floor(q)) return RV_INF; if (x != floor(x)) return nan; }
    if (q == RV_INF) return 0;
    double sum = 0, a = q;
    int k = 0;
    while (a < 10 || k < 2) { sum += pow(a, -x); a += 1; k += 1; }
    double ax = pow(a, -x);
    sum += a * ax / (x - 1) + 0.5 * ax;
    double rising = x * ax / a;
    for (int j = 0; j < 12; ++j) {
        double term = c[j] * rising;
        sum += term;
        if (fabs(term) <= fabs(sum) * 1e-17) break;
        double m = 2.0 * j + 1;
        rising *= (x + m) * (x + m + 1) / (a * a);
    }
    return sum;
}
__device__ double rv_sp_polygamma(double n, double x) {
    if (isnan(n) || n < 0 || n != floor(n)) return __longlong_as_double(0x7ff8000000000000ll);
    if (n == 0) return rv_sp_digamma(x);
    double sign = fmod(n, 2.0) == 0 ? -1 : 1;
    return sign * exp(lgamma(n + 1)) * rv_sp_zeta(n + 1, x);
}
__device__ double rv_sp_gamma_prefactor(double a, double x) { return exp(a * log(x) - x - lgamma(a)); }
__device__ double rv_sp_igamma_series(double a, double x) {
    double term = 1 / a, sum = 1 / a, n = a;
    for (int i = 0; i < 2000; ++i) { n += 1; term *= x / n; sum += term; if (fabs(term) < fabs(sum) * 1e-17) break; }
    return sum * rv_sp_gamma_prefactor(a, x);
}
__device__ double rv_sp_igammac_fraction(double a, double x) {
    const double tiny = 1e-300;
    double b = x + 1 - a, c = 1 / tiny, d = 1 / b, h = d;
    for (int i = 1; i < 2000; ++i) {
        double an = -i * (i - a);
        b += 2;
        d = an * d + b; if (fabs(d) < tiny) d = tiny;
        c = b + an / c; if (fabs(c) < tiny) c = tiny;
        d = 1 / d;
        double step = d * c;
        h *= step;
        if (fabs(step - 1) < 1e-16) break;
    }
    return rv_sp_gamma_prefactor(a, x) * h;
}
__device__ double rv_sp_igamma(double a, double x) {
    if (isnan(a) || isnan(x) || a <= 0 || x < 0) return __longlong_as_double(0x7ff8000000000000ll);
    if (x == 0) return 0;
    if (x == RV_INF) return 1;
    return x < a + 1 ? rv_sp_igamma_series(a, x) : 1 - rv_sp_igammac_fraction(a, x);
}
__device__ double rv_sp_igammac(double a, double x) {
    if (isnan(a) || isnan(x) || a <= 0 || x < 0) return __longlong_as_double(0x7ff8000000000000ll);
    if (x == 0) return 1;
    if (x == RV_INF) return 0;
    return x < a + 1 ? 1 - rv_sp_igamma_series(a, x) : rv_sp_igammac_fraction(a, x);
}
__device__ double rv_sp_igamma_grad_a(double a, double x) {
    if (isnan(a) || isnan(x) || a <= 0 || x < 0) return __longlong_as_double(0x7ff8000000000000ll);
    if (x == 0 || x == RV_INF) return 0;
    if (x < a + 1) {
        double prefactor = exp(a * log(x) - x - lgamma(a + 1));
        if (prefactor == 0) return 0;
        double base = log(x) - rv_sp_digamma(a + 1), term = 1, harmonic = 0, dsum = base, n = a;
        for (int i = 0; i < 2000; ++i) {
            n += 1; term *= x / n; harmonic += 1 / n;
            double dterm = term * (base - harmonic);
            dsum += dterm;
            if (fabs(dterm) <= fabs(dsum) * 1e-17) break;
        }
        return prefactor * dsum;
    }
    double log_factor = log(x) - rv_sp_digamma(a), prefactor = rv_sp_gamma_prefactor(a, x);
    if (prefactor == 0) return 0;
    double b0 = x + 1 - a;
    double ap = 1, ac = b0, bp = 0, bc = 1, dap = 0, dac = -1, dbp = 0, dbc = 0, f = b0, df = -1;
    for (int i = 1; i < 2000; ++i) {
        double fi = i, an = -fi * (fi - a), dan = fi, bn = b0 + 2 * fi;
        double an_ = bn * ac + an * ap, bn_ = bn * bc + an * bp;
        double dan_ = -ac + bn * dac + dan * ap + an * dap, dbn_ = -bc + bn * dbc + dan * bp + an * dbp;
        ap = ac; ac = an_; bp = bc; bc = bn_; dap = dac; dac = dan_; dbp = dbc; dbc = dbn_;
        if (bc == 0) continue;
        double s = 1 / bc;
        ap *= s; ac *= s; bp *= s; bc *= s; dap *= s; dac *= s; dbp *= s; dbc *= s;
        double fn = ac / bc, dfn = (dac * bc - ac * dbc) / (bc * bc);
        bool done = fabs(fn - f) <= 1e-16 * fabs(fn) && fabs(dfn - df) <= 1e-15 * fabs(dfn);
        f = fn; df = dfn;
        if (done) break;
    }
    return -prefactor * (log_factor / f - df / (f * f));
}
__device__ double rv_sp_ndtri(double p) {
    if (isnan(p) || p < 0 || p > 1) return __longlong_as_double(0x7ff8000000000000ll);
    if (p == 0) return -RV_INF;
    if (p == 1) return RV_INF;
    if (p == 0.5) return 0;
    double sign = 1;
    if (p > 0.5) { p = 1 - p; sign = -1; }
    double t = sqrt(-2 * log(p));
    double x = -(t - (2.515517 + t * (0.802853 + t * 0.010328)) / (1 + t * (1.432788 + t * (0.189269 + t * 0.001308))));
    for (int i = 0; i < 3; ++i) {
        double e = 0.5 * erfc(-x * 0.7071067811865476) - p;
        double u = e * sqrt(2 * RV_PI) * exp(0.5 * x * x);
        if (!isfinite(u)) break;
        x -= u / (1 + 0.5 * x * u);
    }
    return sign * x;
}
__device__ double rv_sp_erfinv(double y) {
    if (isnan(y) || fabs(y) > 1) return __longlong_as_double(0x7ff8000000000000ll);
    if (fabs(y) == 1) return y * RV_INF;
    if (y == 0) return y;
    if (fabs(y) <= 0.5) {
        double x = rv_sp_ndtri(0.5 * (1 + y)) * 0.7071067811865476;
        for (int i = 0; i < 2; ++i) x -= (erf(x) - y) / (2 / sqrt(RV_PI) * exp(-x * x));
        return x;
    }
    double r = 1 - fabs(y);
    double x = -rv_sp_ndtri(0.5 * r) * 0.7071067811865476;
    x += (erfc(x) - r) / (2 / sqrt(RV_PI) * exp(-x * x));
    return copysign(x, y);
}
__device__ double rv_sp_bessel(double x, int order1) {
    if (isnan(x)) return x;
    double ax = fabs(x), value;
    if (ax <= 30) {
        double q = 0.25 * ax * ax, term = order1 ? 0.5 * ax : 1, k = 0, sum = term;
        for (int i = 0; i < 500; ++i) {
            k += 1;
            term *= q / (k * (order1 ? k + 1 : k));
            sum += term;
            if (term < sum * 1e-17) break;
        }
        value = sum * exp(-ax);
    } else if (ax == RV_INF) {
        value = 0;
    } else {
        double mu = order1 ? 4 : 0, term = 1, sum = 1;
        for (int k = 1; k < 100; ++k) {
            double m = 2.0 * k - 1;
            double next = term * (m * m - mu) / (8.0 * k * ax);
            if (fabs(next) >= fabs(term)) break;
            term = next;
            sum += term;
            if (fabs(term) < fabs(sum) * 1e-17) break;
        }
        value = sum / sqrt(2 * RV_PI * ax);
    }
    return order1 ? copysign(value, x) : value;
}
"#;

/// Floor modulo of floats (the result takes the divisor's sign).
const FLOAT_HELPERS: &str = r#"
__device__ __forceinline__ float rv_fmod_floorf(float x, float y) {
    float r = fmodf(x, y);
    return (r != 0 && ((r < 0) != (y < 0))) ? r + y : r;
}
__device__ __forceinline__ double rv_fmod_floor(double x, double y) {
    double r = fmod(x, y);
    return (r != 0 && ((r < 0) != (y < 0))) ? r + y : r;
}
"#;

/// `x` (of `from`) as `to`, as Rust's `as` converts (floats to integers
/// saturate, NaN to 0; to bool: nonzero).
fn cast(from: DType, to: DType, x: &str) -> String {
    let t = compute_type(to);
    if to == DType::Bool {
        return format!("({x} != 0)");
    }
    if from.is_float() && !to.is_float() {
        // Saturating, as Rust's `as` (the CPU's cast).
        let (lo, hi) = match to {
            DType::I32 => ("-2147483648.0", "2147483647.0"),
            DType::I64 => ("-9223372036854775808.0", "9223372036854775807.0"),
            DType::I8 => ("-128.0", "127.0"),
            DType::I16 => ("-32768.0", "32767.0"),
            DType::U16 => ("0.0", "65535.0"),
            DType::U32 => ("0.0", "4294967295.0"),
            DType::U64 => ("0.0", "18446744073709551615.0"),
            _ => ("0.0", "255.0"),
        };
        let min = if to == DType::I64 { "(-9223372036854775807ll - 1)".to_string() } else { format!("({t}){lo}") };
        let max = match to {
            DType::I64 => "9223372036854775807ll".to_string(),
            DType::U64 => "18446744073709551615ull".to_string(),
            _ => format!("({t}){hi}"),
        };
        return format!(
            "(isnan((double){x}) ? ({t})0 : ((double){x} <= {lo} ? {min} : ((double){x} >= {hi} ? {max} : ({t}){x})))"
        );
    }
    format!("(({t}){x})")
}

/// The pad widths of instruction `p`, if it is a pad.
fn pad_widths(program: &FusedProgram, p: usize) -> Option<&[(usize, usize)]> {
    match program.instrs.get(p) {
        Some(Instr::Pad { pads, .. }) => Some(pads),
        _ => None,
    }
}

/// The space each input is read in (`None`: the output's; `Some(p)`: pad
/// `p`'s operand space), from the program's register spaces. An input read
/// in no register of the program counts as the output's.
pub(crate) fn input_spaces(
    program: &FusedProgram,
    spaces: &[Option<usize>],
    inputs: usize,
) -> Result<Vec<Option<usize>>> {
    let mut out: Vec<Option<Option<usize>>> = vec![None; inputs];
    for (r, instr) in program.instrs.iter().enumerate() {
        if let Instr::Input(k) = instr {
            let here = spaces.get(r).copied().flatten();
            match out.get_mut(*k) {
                Some(Some(seen)) if *seen != here => {
                    return Err(Error::unimplemented(format!("input {k} read in two index spaces")));
                }
                Some(slot) => *slot = Some(here),
                None => return Err(Error::invalid(format!("fused program reads input {k} of {inputs}"))),
            }
        }
    }
    Ok(out.into_iter().map(Option::flatten).collect())
}

/// The dims each input's strides run along: the output's, or a pad's
/// operand space (the output's minus the pad's widths).
pub(crate) fn input_dims(program: &FusedProgram, out: &[usize], space: Option<usize>) -> Vec<usize> {
    match space.and_then(|p| pad_widths(program, p)) {
        Some(w) => out.iter().zip(w).map(|(&n, &(b, a))| n.saturating_sub(b + a)).collect(),
        None => out.to_vec(),
    }
}

/// Each register's dtype. Unlike the CPU's fused programs (f32 and bool
/// only), a generated kernel computes in any dtype, so the backend's plain
/// unary, binary, select and cast ops are one-instruction programs.
fn register_types(program: &FusedProgram, inputs: &[Meta]) -> Result<Vec<DType>> {
    let mut regs: Vec<DType> = Vec::with_capacity(program.instrs.len());
    for (r, instr) in program.instrs.iter().enumerate() {
        let at = |x: usize| {
            regs.get(x)
                .copied()
                .ok_or_else(|| Error::invalid(format!("register {r} reads register {x}, not yet computed")))
        };
        let dtype = match instr {
            Instr::Input(k) => inputs
                .get(*k)
                .map(|m| m.dtype)
                .ok_or_else(|| Error::invalid(format!("fused program reads input {k}")))?,
            Instr::Scalar(_, d) | Instr::Cast(d, _) => *d,
            Instr::Unary(UnaryOp::IsNan | UnaryOp::IsFinite | UnaryOp::IsInf | UnaryOp::LogicalNot, _) => DType::Bool,
            Instr::Unary(_, a) => at(*a)?,
            Instr::Binary(f, a, b) => {
                let (da, db) = (at(*a)?, at(*b)?);
                if da != db {
                    return Err(Error::dtype(format!("{} of {da} and {db} in register {r}", f.name())));
                }
                if f.is_comparison() || matches!(f, BinaryOp::LogicalAnd | BinaryOp::LogicalOr) && da == DType::Bool {
                    DType::Bool
                } else {
                    da
                }
            }
            Instr::Select(c, a, b) => {
                let (dc, da, db) = (at(*c)?, at(*a)?, at(*b)?);
                if dc != DType::Bool || da != db {
                    return Err(Error::dtype(format!("select of {dc} between {da} and {db} in register {r}")));
                }
                da
            }
            Instr::Pad { operand, .. } => at(*operand)?,
        };
        regs.push(dtype);
    }
    Ok(regs)
}

/// The kernel for `program` over inputs of `inputs` (their dtypes; shapes
/// only for their ranks) into an output of `out`. Trailing reductions are
/// not generated (the backend runs those programs decomposed).
///
/// A pad evaluates its operand (and what feeds it) in its own, unpadded
/// index space and only where the output is not padding: the host passes
/// each input's strides along the space it is read in (see
/// [`input_spaces`]), and the pads' widths are literals of the source.
#[cfg(test)]
pub(crate) fn fused_elementwise(program: &FusedProgram, inputs: &[Meta], out: &Meta) -> Result<KernelSource> {
    fused_elementwise_indexed(program, inputs, out, false)
}

/// [`fused_elementwise`], with 32-bit index arithmetic when `narrow` (for
/// outputs of fewer than 2^31 elements: a 64-bit division costs several
/// times a 32-bit one, and each element divides once per dimension).
pub(crate) fn fused_elementwise_indexed(
    program: &FusedProgram,
    inputs: &[Meta],
    out: &Meta,
    narrow: bool,
) -> Result<KernelSource> {
    let index = if narrow { "unsigned int" } else { "long long" };
    let unsupported = |what: &str| Error::unimplemented(format!("generated CUDA kernels do not take {what} yet"));
    if program.reduce.is_some() {
        return Err(unsupported("a trailing reduction"));
    }
    let rank = out.shape.rank();
    if rank > MAX_RANK || inputs.len() > MAX_INPUTS {
        return Err(Error::unimplemented(format!(
            "a generated kernel takes rank {MAX_RANK} and {MAX_INPUTS} inputs at most, got rank {rank} and {} inputs",
            inputs.len()
        )));
    }
    let regs = register_types(program, inputs)?;
    if regs.get(program.output) != Some(&out.dtype) {
        return Err(Error::dtype(format!("fused program's result is not {}", out.dtype)));
    }
    let spaces = if program.has_pads() { program.spaces()? } else { vec![None; program.instrs.len()] };
    let in_space = input_spaces(program, &spaces, inputs.len())?;
    for instr in &program.instrs {
        if let Instr::Pad { pads, .. } = instr {
            if pads.len() != rank {
                return Err(unsupported(&format!("a pad of rank {} in a kernel of rank {rank}", pads.len())));
            }
        }
    }
    let mut body = String::new();
    // The output's multi-index, innermost first; the outermost index is
    // what remains, so a rank-1 kernel divides nothing.
    let _ = writeln!(body, "        {index} rest = i;");
    for d in (0..rank).rev() {
        if d > 0 {
            let _ = writeln!(
                body,
                "        const long long x{d} = (long long)(rest % ({index})p.dims[{d}]); rest /= ({index})p.dims[{d}];"
            );
        } else {
            let _ = writeln!(body, "        const long long x0 = (long long)rest;");
        }
    }
    // Whether each pad's operand is in range here.
    for (r, instr) in program.instrs.iter().enumerate() {
        if let Instr::Pad { pads, .. } = instr {
            let conds: Vec<String> = pads
                .iter()
                .enumerate()
                .map(|(d, &(b, a))| format!("x{d} >= {b} && x{d} < p.dims[{d}] - {a}"))
                .collect();
            let cond = if conds.is_empty() { "true".to_string() } else { conds.join(" && ") };
            let _ = writeln!(body, "        const bool in{r} = {cond};");
        }
    }
    // Each input's offset, from the index of the space it is read in.
    for (k, space) in in_space.iter().enumerate() {
        let terms: Vec<String> = (0..rank)
            .map(|d| match space.and_then(|p| pad_widths(program, p)).map(|w| w[d].0) {
                Some(b) if b > 0 => format!("(x{d} - {b}) * p.strides[{k}][{d}]"),
                _ => format!("x{d} * p.strides[{k}][{d}]"),
            })
            .collect();
        let sum = if terms.is_empty() { "0".to_string() } else { terms.join(" + ") };
        let _ = writeln!(body, "        const long long o{k} = {sum};");
    }
    for (r, instr) in program.instrs.iter().enumerate() {
        let dtype = regs[r];
        let t = compute_type(dtype);
        let reg = |x: usize| format!("r{x}");
        let expr = match instr {
            Instr::Input(k) => {
                let from = inputs.get(*k).ok_or_else(|| Error::invalid(format!("fused program reads input {k}")))?;
                load(from.dtype, &format!("p.inputs[{k}]"), &format!("o{k}"))
            }
            Instr::Scalar(v, d) => literal(*v, *d),
            Instr::Unary(f, a) => unary(*f, regs[*a], &reg(*a))?,
            Instr::Binary(f, a, b) => binary(*f, regs[*a], &reg(*a), &reg(*b))?,
            Instr::Select(c, a, b) => format!("({} ? {} : {})", reg(*c), reg(*a), reg(*b)),
            Instr::Cast(to, a) => cast(regs[*a], *to, &reg(*a)),
            Instr::Pad { operand, value, .. } => format!("(in{r} ? {} : {})", reg(*operand), literal(*value, dtype)),
        };
        // f16/bf16 registers round to their type after each instruction,
        // as the unfused ops (which store each result) do.
        let expr = match dtype {
            DType::F16 => format!("rv_from_f16(rv_to_f16({expr}))"),
            DType::BF16 => format!("rv_from_bf16(rv_to_bf16({expr}))"),
            _ => expr,
        };
        match spaces.get(r).copied().flatten() {
            // Inside a pad: computed only where its operand is in range.
            Some(p) if !matches!(instr, Instr::Scalar(..)) => {
                let _ = writeln!(body, "        {t} r{r} = ({t})0;\n        if (in{p}) r{r} = {expr};");
            }
            _ => {
                let _ = writeln!(body, "        const {t} r{r} = {expr};");
            }
        }
    }
    let result = format!("r{}", program.output);
    let store = match out.dtype {
        DType::F16 => format!("rv_to_f16({result})"),
        DType::BF16 => format!("rv_to_bf16({result})"),
        _ => result,
    };
    let _ = writeln!(body, "        (({}*)p.out)[i] = {store};", storage_type(out.dtype));

    // The key must not change between builds (it names files of the disk
    // cache), so not `DefaultHasher`: FNV-1a over the body, which with the
    // fixed prelude determines the source.
    let key = fnv1a(body.as_bytes());
    let name = format!("rivulet_fused_{key:016x}{}", if narrow { "_n" } else { "" });
    let mut source = String::from(PRELUDE);
    source.push_str(FLOAT_HELPERS);
    if body.contains("rv_sp_") {
        source.push_str(SPECIAL_HELPERS);
    }
    for d in INT_DTYPES {
        source.push_str(&int_helpers(d));
    }
    let _ = write!(
        source,
        "\nextern \"C\" __global__ void {name}(const RvParams p) {{\n    \
         for ({index} i = ({index})blockIdx.x * blockDim.x + threadIdx.x; i < ({index})p.n; \
         i += ({index})gridDim.x * blockDim.x) {{\n{body}    }}\n}}\n"
    );
    Ok(KernelSource { name, source, key })
}

/// The generated kernels, compiled for the host by the system C++ compiler
/// (CUDA's qualifiers and intrinsics defined away by a shim, one thread
/// walking the grid-stride loop) and run against the CPU backend: bitwise
/// for arithmetic, comparisons, casts, integer division and the f16/bf16
/// conversions; within 32 ulps for library functions (exp, erf, pow...),
/// whose host, device and CPU-kernel versions differ anyway (gelu near -2.5
/// loses digits to cancellation: 9 ulps apart).
#[cfg(all(test, target_os = "linux"))]
pub(crate) mod tests {
    use super::*;
    use crate::backend::{execute_on, KernelCtx};
    use crate::op::Op;
    use crate::tensor::dtype::with_dtype;
    use crate::tensor::storage::HostBuffer;
    use crate::tensor::{Device, Element, Shape, Value};
    use std::ffi::{c_void, CString};

    const SHIM: &str = r#"
#include <math.h>
#include <string.h>
#define __global__
#define __device__
#define __forceinline__ inline
struct RvDim { unsigned int x; };
static const RvDim blockIdx = {0}, threadIdx = {0}, blockDim = {1}, gridDim = {1};
static inline float __uint_as_float(unsigned int u) { float f; memcpy(&f, &u, 4); return f; }
static inline unsigned int __float_as_uint(float f) { unsigned int u; memcpy(&u, &f, 4); return u; }
static inline double __longlong_as_double(long long u) { double f; memcpy(&f, &u, 8); return f; }
static inline int atomicExch(int* p, int v) { int o = *p; *p = v; return o; }
"#;

    /// A shared library the host compiler built from CUDA C++ (a shim
    /// standing in for the CUDA built-ins), removed with its folder on drop.
    pub(crate) struct HostLibrary {
        dir: std::path::PathBuf,
        handle: *mut c_void,
    }

    impl Drop for HostLibrary {
        fn drop(&mut self) {
            // SAFETY: the handle came from dlopen; no symbol of it is used after this.
            unsafe { libc::dlclose(self.handle) };
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    impl HostLibrary {
        /// Build `source` with `flags` (the standard, the optimisation), or
        /// `None`, saying so, where no C++ compiler is; a source that does
        /// not build fails the test (and is kept for reading).
        pub(crate) fn build(tag: &str, source: &str, flags: &[&str]) -> Option<HostLibrary> {
            let dir = std::env::temp_dir().join(format!("rivulet-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).ok()?;
            let (src, lib) = (dir.join("kernels.cpp"), dir.join("kernels.so"));
            std::fs::write(&src, source).ok()?;
            let out = std::process::Command::new("c++")
                .args(flags)
                .args(["-fPIC", "-shared", "-pthread", "-ffp-contract=off", "-o"])
                .arg(&lib)
                .arg(&src)
                .output();
            let out = match out {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("skipped: no host C++ compiler to build CUDA source on ({e})");
                    return None;
                }
            };
            assert!(
                out.status.success(),
                "CUDA source does not build for the host (kept at {}):\n{}",
                src.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let c = CString::new(lib.to_str()?).ok()?;
            // SAFETY: a library just built from the source above.
            let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
            assert!(!handle.is_null(), "dlopen of {} failed", lib.display());
            Some(HostLibrary { dir, handle })
        }

        /// The address of function `name` (the test knows its signature).
        pub(crate) fn symbol(&self, name: &str) -> *mut c_void {
            let c = CString::new(name).expect("a symbol name");
            // SAFETY: a live handle.
            let f = unsafe { libc::dlsym(self.handle, c.as_ptr()) };
            assert!(!f.is_null(), "{name} not found in the built library");
            f
        }
    }

    /// A compiled kernel, or `None` (with a message) where no C++ compiler is.
    struct HostKernel {
        _lib: HostLibrary,
        f: unsafe extern "C" fn(FusedParams),
    }

    fn compile(k: &KernelSource) -> Option<HostKernel> {
        let source = format!("{SHIM}{}", k.source);
        let lib = HostLibrary::build(&format!("codegen-{:016x}", k.key), &source, &["-std=c++17", "-O0"])?;
        // SAFETY: the symbol is the kernel, `void(RvParams)`; FusedParams is
        // RvParams's #[repr(C)] twin, passed by value.
        let f = unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn(FusedParams)>(lib.symbol(&k.name)) };
        Some(HostKernel { _lib: lib, f })
    }

    /// A host value of `dtype` and `shape` holding `data`.
    pub(crate) fn value(dtype: DType, shape: &[usize], data: &[f64]) -> Value {
        let buf = with_dtype!(dtype, T => {
            let v: Vec<T> = data.iter().map(|&x| T::from_f64(x)).collect();
            HostBuffer::from_slice(&v).expect("buffer")
        });
        Value::from_buffer(dtype, Shape::new(shape), buf)
    }

    /// Row-major strides of `shape` broadcast to `out` (0 where broadcast).
    fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<isize> {
        let mut strides = vec![0isize; out.len()];
        let mut s = 1isize;
        for (d, &n) in shape.iter().enumerate().rev() {
            let od = out.len() - shape.len() + d;
            strides[od] = if n == 1 { 0 } else { s };
            s *= n as isize;
        }
        strides
    }

    /// Run `program` as a generated kernel: the output bytes and the error flag.
    fn run_generated(program: &FusedProgram, inputs: &[&Value], out: &Meta) -> Option<(Vec<u8>, i32)> {
        let metas: Vec<Meta> = inputs.iter().map(|v| Meta::new(v.dtype, v.shape().clone())).collect();
        // The 32-bit indexing the backend uses below 2^31 elements (the
        // NVRTC test compiles the 64-bit form).
        let k = fused_elementwise_indexed(program, &metas, out, true).expect("source");
        let kernel = compile(&k)?;
        let dims = out.shape.dims().to_vec();
        let mut bytes = vec![0u8; out.shape.dims().iter().product::<usize>() * out.dtype.size()];
        let mut error = 0i32;
        let spaces =
            if program.has_pads() { program.spaces().expect("spaces") } else { vec![None; program.instrs.len()] };
        let in_space = input_spaces(program, &spaces, inputs.len()).expect("input spaces");
        let ins: Vec<(*const u8, Vec<isize>)> = inputs
            .iter()
            .zip(&in_space)
            .map(|(v, &sp)| {
                let along = input_dims(program, &dims, sp);
                (v.storage.host().bytes().as_ptr(), broadcast_strides(v.shape().dims(), &along))
            })
            .collect();
        let params = FusedParams::new(bytes.as_mut_ptr(), &mut error, &dims, &ins).expect("params");
        // SAFETY: every pointer in `params` is live for the call, and the
        // strides stay within each input for the output's indices.
        unsafe { (kernel.f)(params) };
        Some((bytes, error))
    }

    /// The CPU backend's result of `program`, one op per instruction (the
    /// reference backend computes f32 in f64, so `floor_div(1e-40, -3e38)`
    /// is -1 there and -0 in f32, as in TensorFlow and here).
    fn reference(program: &FusedProgram, inputs: &[&Value]) -> crate::error::Result<Value> {
        let device = crate::backend::backend(Device::CPU)?;
        let mut regs: Vec<Value> = Vec::new();
        for instr in &program.instrs {
            let run = |op: Op, args: &[usize]| -> crate::error::Result<Value> {
                let refs: Vec<&Value> = args.iter().map(|&a| &regs[a]).collect();
                Ok(execute_on(Device::CPU, &op, &refs, &KernelCtx::EAGER)?.remove(0))
            };
            let v = match instr {
                Instr::Input(k) => device.upload(inputs[*k])?,
                Instr::Scalar(v, d) => device.upload(&with_dtype!(*d, T => {
                    let x: T = match v {
                        Scalar::F64(f) => T::from_f64(*f),
                        other => T::from_i64(other.as_f64() as i64),
                    };
                    Value::from_buffer(*d, Shape::scalar(), HostBuffer::from_slice(&[x])?)
                }))?,
                Instr::Unary(f, a) => run(Op::Unary { f: *f }, &[*a])?,
                Instr::Binary(f, a, b) => run(Op::Binary { f: *f }, &[*a, *b])?,
                Instr::Select(c, a, b) => run(Op::Select, &[*c, *a, *b])?,
                Instr::Cast(d, a) => run(Op::Cast { dtype: *d }, &[*a])?,
                Instr::Pad { operand, pads, value } => run(
                    Op::Pad { paddings: pads.clone(), mode: crate::op::movement::PadMode::Constant, value: *value },
                    &[*operand],
                )?,
            };
            regs.push(v);
        }
        device.download(&regs[program.output])
    }

    /// Compare element by element, as f64; `ulps` > 0 allows that many f32
    /// (or f64) units in the last place, else bitwise (NaN matches NaN).
    fn check(what: &str, got: &[u8], want: &Value, ulps: u64) {
        let dtype = want.dtype;
        let want_bytes = want.storage.host().bytes();
        if ulps == 0 && dtype != DType::Bool && !dtype.is_float() {
            assert_eq!(got, &want_bytes[..got.len()], "{what}: integer results differ");
            return;
        }
        with_dtype!(dtype, T => {
            let n = got.len() / std::mem::size_of::<T>();
            for i in 0..n {
                let g: T = unsafe { std::ptr::read_unaligned(got.as_ptr().cast::<T>().add(i)) };
                let w: T = unsafe { std::ptr::read_unaligned(want_bytes.as_ptr().cast::<T>().add(i)) };
                let (g, w) = (g.to_f64(), w.to_f64());
                if g.is_nan() && w.is_nan() || g.to_bits() == w.to_bits() {
                    continue;
                }
                let ulp = if dtype == DType::F64 { f64::EPSILON * w.abs() } else { f32::EPSILON as f64 * w.abs().max(f32::MIN_POSITIVE as f64) };
                assert!(
                    ulps > 0 && (g - w).abs() <= ulps as f64 * ulp,
                    "{what}: element {i}: generated {g:e}, reference {w:e}"
                );
            }
        });
    }

    /// Edge values for floats: signed zeros, infinities, NaN, tiny and huge.
    const FLOATS: [f64; 16] = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        2.5,
        -2.5,
        0.5,
        -7.25,
        1e-40,
        -3e38,
        3e38,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        6.0,
        100.75,
    ];

    fn unary_program(f: UnaryOp) -> FusedProgram {
        FusedProgram { instrs: vec![Instr::Input(0), Instr::Unary(f, 0)], output: 1, reduce: None }
    }

    fn binary_program(f: BinaryOp) -> FusedProgram {
        FusedProgram { instrs: vec![Instr::Input(0), Instr::Input(1), Instr::Binary(f, 0, 1)], output: 2, reduce: None }
    }

    /// Run `program` generated and on the CPU and compare (see [`check`]);
    /// `false` where no host compiler is.
    fn matches_cpu(what: &str, program: &FusedProgram, inputs: &[&Value], ulps: u64) -> bool {
        let want = reference(program, inputs).expect("the CPU runs it");
        let out = Meta::new(want.dtype, want.shape().clone());
        let Some((got, err)) = run_generated(program, inputs, &out) else { return false };
        assert_eq!(err, 0, "{what}: error flag");
        check(what, &got, &want, ulps);
        true
    }

    /// Every unary op on f32 and f64 edge values.
    #[test]
    fn unary_ops_match_the_cpu_backend() {
        use UnaryOp::*;
        let exact = [Neg, Abs, Sign, Square, Relu, Relu6, Sqrt, Reciprocal, Floor, Ceil, Round, IsNan, IsFinite, IsInf];
        for dtype in [DType::F32, DType::F64] {
            let x = value(dtype, &[FLOATS.len()], &FLOATS);
            for &f in UnaryOp::ALL.iter().filter(|&&f| f != LogicalNot) {
                let ulps = if exact.contains(&f) { 0 } else { 32 };
                if !matches_cpu(&format!("{} {dtype}", f.name()), &unary_program(f), &[&x], ulps) {
                    return;
                }
            }
        }
    }

    /// Every binary op on every pair of edge values, f32 and f64, the second
    /// operand broadcast along the first dimension.
    #[test]
    fn binary_ops_match_the_cpu_backend() {
        use BinaryOp::*;
        let n = FLOATS.len();
        let a: Vec<f64> = (0..n * n).map(|i| FLOATS[i / n]).collect();
        let inexact = [Pow, Atan2, Hypot, LogAddExp, Xlogy, Xlog1py, Zeta, Polygamma, Igamma, Igammac, IgammaGradA];
        for dtype in [DType::F32, DType::F64] {
            let (x, y) = (value(dtype, &[n, n], &a), value(dtype, &[n], &FLOATS));
            for &f in BinaryOp::ALL.iter().filter(|&&f| !matches!(f, LogicalAnd | LogicalOr)) {
                let ulps = if inexact.contains(&f) { 32 } else { 0 };
                if !matches_cpu(&format!("{} {dtype}", f.name()), &binary_program(f), &[&x, &y], ulps) {
                    return;
                }
            }
        }
    }

    /// Integer arithmetic wraps and divides as the reference does, at the
    /// extremes too; a zero divisor or a negative power raises the flag.
    #[test]
    fn integer_ops_wrap_and_flag_division_by_zero() {
        use BinaryOp::*;
        for dtype in INT_DTYPES {
            let (min, max) = match dtype {
                DType::I32 => (i32::MIN as f64, i32::MAX as f64),
                DType::I64 => (i64::MIN as f64, i64::MAX as f64),
                DType::I8 => (-128.0, 127.0),
                DType::I16 => (-32768.0, 32767.0),
                DType::U16 => (0.0, 65535.0),
                DType::U32 => (0.0, u32::MAX as f64),
                DType::U64 => (0.0, (1u64 << 53) as f64),
                _ => (0.0, 255.0),
            };
            let vals = [0.0, 1.0, -1.0, 2.0, -7.0, 7.0, 3.0, -3.0, min, max, 100.0, 13.0];
            let divisors: Vec<f64> =
                [1.0, -1.0, 2.0, -7.0, 7.0, 3.0, -3.0, max, 13.0].into_iter().filter(|&d| d > min).collect();
            let n = vals.len();
            let m = divisors.len();
            let a: Vec<f64> = (0..n * m).map(|i| vals[i / m]).collect();
            let (x, y) = (value(dtype, &[n, m], &a), value(dtype, &[m], &divisors));
            for f in [Add, Sub, Mul, Div, FloorDiv, FloorMod, Maximum, Minimum, Equal, Less, GreaterEqual] {
                if !matches_cpu(&format!("{} {dtype}", f.name()), &binary_program(f), &[&x, &y], 0) {
                    return;
                }
            }
            let column = value(dtype, &[n], &vals);
            for f in [UnaryOp::Neg, UnaryOp::Abs, UnaryOp::Sign, UnaryOp::Square, UnaryOp::Relu, UnaryOp::Relu6] {
                matches_cpu(&format!("{} {dtype}", f.name()), &unary_program(f), &[&column], 0);
            }
            let (b, e) = (value(dtype, &[4], &[3.0, 2.0, 7.0, max]), value(dtype, &[4], &[5.0, 40.0, 0.0, 3.0]));
            matches_cpu(&format!("pow {dtype}"), &binary_program(Pow), &[&b, &e], 0);
            for (f, divisor, flag) in [(Div, 0.0, 1), (FloorMod, 0.0, 1), (Pow, -1.0, 2)] {
                if dtype.is_unsigned() && flag == 2 {
                    continue;
                }
                let program = binary_program(f);
                let (x, y) = (value(dtype, &[2], &[5.0, 6.0]), value(dtype, &[2], &[1.0, divisor]));
                assert!(reference(&program, &[&x, &y]).is_err(), "the CPU refuses it too");
                let Some((_, err)) = run_generated(&program, &[&x, &y], &Meta::new(dtype, Shape::new(&[2]))) else {
                    return;
                };
                assert_eq!(err, flag, "{} {dtype} by {divisor}", f.name());
            }
        }
    }

    /// Casts between every pair of dtypes, floats saturating into integers;
    /// every f16 and bf16 bit pattern widens exactly, and f32 values round
    /// to f16/bf16 to nearest, ties to even, as the `half` crate rounds.
    #[test]
    fn casts_and_half_conversions_are_exact() {
        let mut data: Vec<f64> = FLOATS.to_vec();
        data.extend([1e10, -1e10, 255.5, 256.0, -0.75, 65504.0, 65520.0, 1e-5, 6e-8, 3e-8, 2.98e-8]);
        // Fused programs hold real registers only (complex casts run unfused, on the host).
        let real = || DType::ALL.into_iter().filter(|d| !d.is_complex());
        for from in real() {
            let x = value(from, &[data.len()], &data);
            for to in real() {
                let program =
                    FusedProgram { instrs: vec![Instr::Input(0), Instr::Cast(to, 0)], output: 1, reduce: None };
                let want = reference(&program, &[&x]).expect("reference");
                let Some((got, _)) = run_generated(&program, &[&x], &Meta::new(to, Shape::new(&[data.len()]))) else {
                    return;
                };
                check(&format!("cast {from} -> {to}"), &got, &want, 0);
            }
        }
        for (half, widen) in [(DType::F16, 0), (DType::BF16, 1)] {
            let bits: Vec<u16> = (0..=u16::MAX).collect();
            let x = if widen == 0 {
                let h: Vec<half::f16> = bits.iter().map(|&b| half::f16::from_bits(b)).collect();
                Value::from_buffer(half, Shape::new(&[bits.len()]), HostBuffer::from_slice(&h).expect("bits"))
            } else {
                let h: Vec<half::bf16> = bits.iter().map(|&b| half::bf16::from_bits(b)).collect();
                Value::from_buffer(half, Shape::new(&[bits.len()]), HostBuffer::from_slice(&h).expect("bits"))
            };
            let program =
                FusedProgram { instrs: vec![Instr::Input(0), Instr::Cast(DType::F32, 0)], output: 1, reduce: None };
            let Some((got, _)) = run_generated(&program, &[&x], &Meta::new(DType::F32, Shape::new(&[bits.len()])))
            else {
                return;
            };
            for (i, &b) in bits.iter().enumerate() {
                let g = f32::from_le_bytes(got[4 * i..4 * i + 4].try_into().expect("4 bytes"));
                let w = if widen == 0 { half::f16::from_bits(b).to_f32() } else { half::bf16::from_bits(b).to_f32() };
                assert!(g.to_bits() == w.to_bits() || g.is_nan() && w.is_nan(), "{half} bits {b:#06x}: {g:e} vs {w:e}");
            }
            // f32 -> half: a pseudo-random sweep of bit patterns plus the edges.
            let mut state = 0x9E37_79B9_7F4A_7C15u64;
            let mut floats: Vec<f32> = (0..200_000)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    f32::from_bits((state >> 32) as u32)
                })
                .collect();
            floats.extend([
                0.0,
                -0.0,
                65504.0,
                65519.99,
                65520.0,
                5.96e-8,
                2.98e-8,
                2.9802322e-8,
                f32::INFINITY,
                f32::NAN,
            ]);
            let x = Value::from_buffer(
                DType::F32,
                Shape::new(&[floats.len()]),
                HostBuffer::from_slice(&floats).expect("f"),
            );
            let program = FusedProgram { instrs: vec![Instr::Input(0), Instr::Cast(half, 0)], output: 1, reduce: None };
            let Some((got, _)) = run_generated(&program, &[&x], &Meta::new(half, Shape::new(&[floats.len()]))) else {
                return;
            };
            for (i, &f) in floats.iter().enumerate() {
                let g = u16::from_le_bytes([got[2 * i], got[2 * i + 1]]);
                let w = if widen == 0 { half::f16::from_f32(f).to_bits() } else { half::bf16::from_f32(f).to_bits() };
                let nan = if widen == 0 { half::f16::from_bits(g).is_nan() } else { half::bf16::from_bits(g).is_nan() };
                assert!(g == w || f.is_nan() && nan, "{half} of {f:e} ({:#010x}): {g:#06x} vs {w:#06x}", f.to_bits());
            }
        }
    }

    /// A pad inside a program (the B7 stencil's form): its operand is read
    /// in the unpadded space, the border is the pad value.
    #[test]
    fn a_stencil_with_a_pad_matches_the_cpu_backend() {
        // The B7 step's shape: u + 0.2 * pad(u[0:4,1:6] + u[1:5,1:6]*-4, 1) on a 6x7 grid,
        // the slices fed as inputs read in the pad's space.
        use BinaryOp::*;
        let k = |v: f64| Instr::Scalar(Scalar::F64(v), DType::F32);
        let program = FusedProgram {
            instrs: vec![
                Instr::Input(0),
                Instr::Input(1),
                k(-4.0),
                Instr::Binary(Mul, 1, 2),
                Instr::Binary(Add, 0, 3),
                Instr::Pad { operand: 4, pads: vec![(1, 1), (1, 1)], value: Scalar::F64(0.0) },
                k(0.2),
                Instr::Binary(Mul, 5, 6),
                Instr::Input(2),
                Instr::Binary(Add, 8, 7),
            ],
            output: 9,
            reduce: None,
        };
        let a: Vec<f64> = (0..20).map(|i| (i as f64 * 0.7).sin()).collect();
        let b: Vec<f64> = (0..20).map(|i| (i as f64 * 0.3).cos()).collect();
        let u: Vec<f64> = (0..42).map(|i| i as f64 * 0.01 - 0.2).collect();
        let (x, y, z) =
            (value(DType::F32, &[4, 5], &a), value(DType::F32, &[4, 5], &b), value(DType::F32, &[6, 7], &u));
        let want = reference(&program, &[&x, &y, &z]).expect("reference");
        let Some((got, err)) = run_generated(&program, &[&x, &y, &z], &Meta::new(DType::F32, Shape::new(&[6, 7])))
        else {
            return;
        };
        assert_eq!(err, 0);
        check("stencil", &got, &want, 0);
        // The border is the input plus 0.2 * 0: exactly u.
        let border: f32 = unsafe { std::ptr::read_unaligned(got.as_ptr().cast::<f32>()) };
        assert_eq!(border, u[0] as f32);
    }

    /// A program mixing dtypes, constants (NaN and inf among them), select,
    /// comparisons and broadcasting, against the reference; the kernel's
    /// name follows its source, and one source serves every shape of a rank.
    #[test]
    fn a_mixed_program_matches_the_cpu_backend_and_keys_by_source() {
        use BinaryOp::*;
        let k = |v: f64| Instr::Scalar(Scalar::F64(v), DType::F32);
        let program = FusedProgram {
            instrs: vec![
                Instr::Input(0),
                Instr::Input(1),
                Instr::Binary(Mul, 0, 1),
                k(0.5),
                Instr::Binary(Add, 2, 3),
                Instr::Binary(Greater, 4, 0),
                k(f64::NAN),
                Instr::Select(5, 4, 6),
                Instr::Unary(UnaryOp::Tanh, 7),
                k(f64::INFINITY),
                Instr::Binary(Minimum, 8, 9),
                Instr::Input(2),
                Instr::Cast(DType::F32, 11),
                Instr::Binary(Sub, 10, 12),
            ],
            output: 13,
            reduce: None,
        };
        let a: Vec<f64> = (0..24).map(|i| (i as f64 - 11.0) * 0.37).collect();
        let x = value(DType::F32, &[2, 3, 4], &a);
        let y = value(DType::F32, &[3, 1], &[2.0, -1.5, 0.25]);
        let z = value(DType::I32, &[4], &[1.0, -2.0, 3.0, 40.0]);
        let want = reference(&program, &[&x, &y, &z]).expect("reference");
        let Some((got, err)) = run_generated(&program, &[&x, &y, &z], &Meta::new(DType::F32, Shape::new(&[2, 3, 4])))
        else {
            return;
        };
        assert_eq!(err, 0);
        check("mixed", &got, &want, 4);
        let metas = |s: &[usize]| {
            vec![
                Meta::new(DType::F32, Shape::new(s)),
                Meta::new(DType::F32, Shape::new(&[3, 1])),
                Meta::new(DType::I32, Shape::new(&[4])),
            ]
        };
        let one =
            fused_elementwise(&program, &metas(&[2, 3, 4]), &Meta::new(DType::F32, Shape::new(&[2, 3, 4]))).expect("k");
        let other =
            fused_elementwise(&program, &metas(&[5, 3, 4]), &Meta::new(DType::F32, Shape::new(&[5, 3, 4]))).expect("k");
        assert_eq!((one.key, &one.name), (other.key, &other.name), "shapes of one rank share a kernel");
        let mut changed = program.clone();
        changed.instrs[3] = k(0.25);
        let third =
            fused_elementwise(&changed, &metas(&[2, 3, 4]), &Meta::new(DType::F32, Shape::new(&[2, 3, 4]))).expect("k");
        assert_ne!(one.key, third.key, "another constant is another kernel");
        // Reductions and pads are refused (the backend runs them decomposed).
        let mut reduced = program.clone();
        reduced.reduce =
            Some(crate::op::fused::FusedReduce { f: crate::op::reduce::ReduceOp::Sum, axes: vec![2], keepdims: false });
        let e =
            fused_elementwise(&reduced, &metas(&[2, 3, 4]), &Meta::new(DType::F32, Shape::new(&[2, 3]))).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Unimplemented);
    }
}

//! The CUDA backend's own kernels, besides the generated elementwise ones:
//! fills, strided copies, reductions (warp-shuffle trees over rows, thread
//! columns over leading axes, in two passes where one row is too long for
//! one block), index reductions, scans, ranges, gathers and scatters,
//! top-k, sliding windows (im2col, col2im, pooling) and an integer matrix
//! product. One C++ template source; each instantiation (a family, its
//! dtypes and flags) is its own small NVRTC program, compiled on first use
//! and cached like the generated kernels.

use super::codegen::PRELUDE;
use crate::op::reduce::{ArgOp, ReduceOp, ScanOp};
use crate::tensor::DType;

/// The templates (after the codegen prelude's f16/bf16 conversions).
pub(crate) const TEMPLATES: &str = r#"
struct F16 { unsigned short b; };
struct BF16 { unsigned short b; };
template <class T> struct Num {
    typedef T acc;
    __device__ static T ld(T x) { return x; }
    __device__ static T st(T a) { return a; }
};
template <> struct Num<F16> {
    typedef float acc;
    __device__ static float ld(F16 x) { return rv_from_f16(x.b); }
    __device__ static F16 st(float a) { F16 r; r.b = rv_to_f16(a); return r; }
};
template <> struct Num<BF16> {
    typedef float acc;
    __device__ static float ld(BF16 x) { return rv_from_bf16(x.b); }
    __device__ static BF16 st(float a) { BF16 r; r.b = rv_to_bf16(a); return r; }
};
/* exp, log and sqrt in the accumulator's own precision (a bare exp(float)
   would promote to double). */
__device__ __forceinline__ float rv_exp(float x) { return expf(x); }
__device__ __forceinline__ double rv_exp(double x) { return exp(x); }
__device__ __forceinline__ float rv_log(float x) { return logf(x); }
__device__ __forceinline__ double rv_log(double x) { return log(x); }
__device__ __forceinline__ float rv_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double rv_sqrt(double x) { return sqrt(x); }
template <class A> struct Lim;
template <> struct Lim<float> { __device__ static float lo() { return -__int_as_float(0x7f800000); } __device__ static float hi() { return __int_as_float(0x7f800000); } };
template <> struct Lim<double> { __device__ static double lo() { return -__longlong_as_double(0x7ff0000000000000LL); } __device__ static double hi() { return __longlong_as_double(0x7ff0000000000000LL); } };
template <> struct Lim<int> { __device__ static int lo() { return (int)0x80000000; } __device__ static int hi() { return 0x7fffffff; } };
template <> struct Lim<long long> { __device__ static long long lo() { return (long long)0x8000000000000000ULL; } __device__ static long long hi() { return 0x7fffffffffffffffLL; } };
template <> struct Lim<unsigned char> { __device__ static unsigned char lo() { return 0; } __device__ static unsigned char hi() { return 255; } };
template <> struct Lim<signed char> { __device__ static signed char lo() { return -128; } __device__ static signed char hi() { return 127; } };
template <> struct Lim<short> { __device__ static short lo() { return -32768; } __device__ static short hi() { return 32767; } };
template <> struct Lim<unsigned short> { __device__ static unsigned short lo() { return 0; } __device__ static unsigned short hi() { return 65535; } };
template <> struct Lim<unsigned int> { __device__ static unsigned int lo() { return 0u; } __device__ static unsigned int hi() { return 0xffffffffu; } };
template <> struct Lim<unsigned long long> { __device__ static unsigned long long lo() { return 0ull; } __device__ static unsigned long long hi() { return 0xffffffffffffffffull; } };

/* Integer sums and products wrap, through the unsigned twin (signed
   overflow is undefined in C++; narrower types are promoted to int). */
template <class A> struct Wrap {
    __device__ static A add(A a, A b) { return a + b; }
    __device__ static A mul(A a, A b) { return a * b; }
};
#define RV_WRAP(S, U) template <> struct Wrap<S> { \
    __device__ static S add(S a, S b) { return (S)((U)a + (U)b); } \
    __device__ static S mul(S a, S b) { return (S)((U)a * (U)b); } };
RV_WRAP(int, unsigned int)
RV_WRAP(long long, unsigned long long)
struct OpSum { template <class A> __device__ static A id() { return (A)0; } template <class A> __device__ static A f(A a, A b) { return Wrap<A>::add(a, b); } };
struct OpProd { template <class A> __device__ static A id() { return (A)1; } template <class A> __device__ static A f(A a, A b) { return Wrap<A>::mul(a, b); } };
/* NaN wins in max and min, as on the CPU. */
struct OpMax { template <class A> __device__ static A id() { return Lim<A>::lo(); } template <class A> __device__ static A f(A a, A b) { return (a > b || a != a) ? a : b; } };
struct OpMin { template <class A> __device__ static A id() { return Lim<A>::hi(); } template <class A> __device__ static A f(A a, A b) { return (a < b || a != a) ? a : b; } };
struct OpAny { template <class A> __device__ static A id() { return (A)0; } template <class A> __device__ static A f(A a, A b) { return (A)(a || b); } };
struct OpAll { template <class A> __device__ static A id() { return (A)1; } template <class A> __device__ static A f(A a, A b) { return (A)(a && b); } };

__device__ __forceinline__ float rv_shfl(float v, int o) { return __shfl_down_sync(0xffffffffu, v, o); }
__device__ __forceinline__ double rv_shfl(double v, int o) { return __shfl_down_sync(0xffffffffu, v, o); }
__device__ __forceinline__ int rv_shfl(int v, int o) { return __shfl_down_sync(0xffffffffu, v, o); }
__device__ __forceinline__ long long rv_shfl(long long v, int o) { return __shfl_down_sync(0xffffffffu, v, o); }
__device__ __forceinline__ unsigned char rv_shfl(unsigned char v, int o) { return (unsigned char)__shfl_down_sync(0xffffffffu, (int)v, o); }
__device__ __forceinline__ signed char rv_shfl(signed char v, int o) { return (signed char)__shfl_down_sync(0xffffffffu, (int)v, o); }
__device__ __forceinline__ short rv_shfl(short v, int o) { return (short)__shfl_down_sync(0xffffffffu, (int)v, o); }
__device__ __forceinline__ unsigned short rv_shfl(unsigned short v, int o) { return (unsigned short)__shfl_down_sync(0xffffffffu, (int)v, o); }
__device__ __forceinline__ unsigned int rv_shfl(unsigned int v, int o) { return __shfl_down_sync(0xffffffffu, v, o); }
__device__ __forceinline__ unsigned long long rv_shfl(unsigned long long v, int o) { return __shfl_down_sync(0xffffffffu, v, o); }

/* The value a reduction stores: the mean divides by the count. */
template <class TA, bool MEAN> __device__ __forceinline__ TA rv_finish(TA acc, long long count) {
    /* An empty integer mean is 0; a float one 0/0 = NaN. */
    if (MEAN) return (count == 0 && (TA)0.5 == (TA)0) ? (TA)0 : (TA)(acc / (TA)count);
    return acc;
}
template <class TO, class TA> __device__ __forceinline__ void rv_store(void* out, long long i, TA v) {
    ((TO*)out)[i] = Num<TO>::st((typename Num<TO>::acc)v);
}

/* Rows of a contiguous [rows, R] input: block (row, part) reduces its part of
   the row with a shuffle tree; one part stores the result, several store
   partials (of the accumulator type) for a second pass. */
template <class TI, class TA, class TO, class OP, bool MEAN, bool FINAL>
__device__ void reduce_rows(const TI* in, void* out, long long rows, long long R, int parts, long long count) {
    long long row = blockIdx.x / parts;
    int part = blockIdx.x % parts;
    long long chunk = (R + parts - 1) / parts;
    long long lo = part * chunk, hi = lo + chunk < R ? lo + chunk : R;
    const TI* p = in + row * R;
    /* Four independent accumulators keep four loads in flight per thread. */
    TA a0 = OP::template id<TA>(), a1 = a0, a2 = a0, a3 = a0;
    const long long step = blockDim.x;
    long long i = lo + threadIdx.x;
    for (; i + 3 * step < hi; i += 4 * step) {
        a0 = OP::f(a0, (TA)Num<TI>::ld(p[i]));
        a1 = OP::f(a1, (TA)Num<TI>::ld(p[i + step]));
        a2 = OP::f(a2, (TA)Num<TI>::ld(p[i + 2 * step]));
        a3 = OP::f(a3, (TA)Num<TI>::ld(p[i + 3 * step]));
    }
    for (; i < hi; i += step) a0 = OP::f(a0, (TA)Num<TI>::ld(p[i]));
    TA acc = OP::f(OP::f(a0, a1), OP::f(a2, a3));
    for (int o = 16; o > 0; o >>= 1) acc = OP::f(acc, rv_shfl(acc, o));
    __shared__ TA warps[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warps[warp] = acc;
    __syncthreads();
    if (warp == 0) {
        int nw = (blockDim.x + 31) >> 5;
        acc = lane < nw ? warps[lane] : OP::template id<TA>();
        for (int o = 16; o > 0; o >>= 1) acc = OP::f(acc, rv_shfl(acc, o));
        if (lane == 0) {
            if (FINAL) rv_store<TO, TA>(out, row, rv_finish<TA, MEAN>(acc, count));
            else ((TA*)out)[blockIdx.x] = acc;
        }
    }
}

/* Columns of a contiguous [outer, R, inner] input: thread (o, j) of part y
   walks its part of R (neighbouring threads read neighbouring addresses). */
template <class TI, class TA, class TO, class OP, bool MEAN, bool FINAL>
__device__ void reduce_cols(const TI* in, void* out, long long outer, long long R, long long inner, int parts, long long count) {
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long n = outer * inner;
    if (t >= n) return;
    long long part = blockIdx.y;
    long long chunk = (R + parts - 1) / parts;
    long long lo = part * chunk, hi = lo + chunk < R ? lo + chunk : R;
    long long o = t / inner, j = t - o * inner;
    const TI* p = in + o * R * inner + j;
    TA a0 = OP::template id<TA>(), a1 = a0, a2 = a0, a3 = a0;
    long long r = lo;
    for (; r + 3 < hi; r += 4) {
        a0 = OP::f(a0, (TA)Num<TI>::ld(p[r * inner]));
        a1 = OP::f(a1, (TA)Num<TI>::ld(p[(r + 1) * inner]));
        a2 = OP::f(a2, (TA)Num<TI>::ld(p[(r + 2) * inner]));
        a3 = OP::f(a3, (TA)Num<TI>::ld(p[(r + 3) * inner]));
    }
    for (; r < hi; ++r) a0 = OP::f(a0, (TA)Num<TI>::ld(p[r * inner]));
    TA acc = OP::f(OP::f(a0, a1), OP::f(a2, a3));
    if (FINAL) rv_store<TO, TA>(out, t, rv_finish<TA, MEAN>(acc, count));
    else ((TA*)out)[part * n + t] = acc;
}

/* Index of the largest (smallest) along R of [outer, R, inner]: the first
   one, NaN skipped, 0 when all are NaN (TensorFlow's). */
template <class TI, class TO, bool MAX>
__device__ void arg_reduce(const TI* in, TO* out, long long outer, long long R, long long inner) {
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= outer * inner) return;
    long long o = t / inner, j = t - o * inner;
    const TI* p = in + o * R * inner + j;
    typedef typename Num<TI>::acc A;
    A best = Num<TI>::ld(p[0]);
    long long at = 0;
    for (long long r = 1; r < R; ++r) {
        A v = Num<TI>::ld(p[r * inner]);
        if (v == v && (best != best || (MAX ? v > best : v < best))) { best = v; at = r; }
    }
    out[t] = (TO)at;
}

/* Cumulative sum or product along R of [outer, R, inner]. */
template <class T, bool PROD>
__device__ void scan(const T* in, T* out, long long outer, long long R, long long inner, int exclusive, int reverse) {
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= outer * inner) return;
    long long o = t / inner, j = t - o * inner;
    const T* p = in + o * R * inner + j;
    T* q = out + o * R * inner + j;
    typedef typename Num<T>::acc A;
    A acc = PROD ? (A)1 : (A)0;
    for (long long s = 0; s < R; ++s) {
        long long r = reverse ? R - 1 - s : s;
        A v = Num<T>::ld(p[r * inner]);
        if (exclusive) { q[r * inner] = Num<T>::st(acc); acc = PROD ? Wrap<A>::mul(acc, v) : Wrap<A>::add(acc, v); }
        else { acc = PROD ? Wrap<A>::mul(acc, v) : Wrap<A>::add(acc, v); q[r * inner] = Num<T>::st(acc); }
    }
}

/* start + i * delta: in f64 for floats, wrapping i64 for integers. */
template <class T>
__device__ void range(T* out, long long n, double start, double delta, long long istart, long long idelta, int integer) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    if (integer) out[i] = Num<T>::st((typename Num<T>::acc)(long long)((unsigned long long)istart + (unsigned long long)i * (unsigned long long)idelta));
    else out[i] = Num<T>::st((typename Num<T>::acc)(start + (double)i * delta));
}

/* Every element of a buffer of n elements of `size` bytes set to `bits`. */
template <class U>
__device__ void fill(U* out, long long n, unsigned long long bits) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        out[i] = (U)bits;
}

/* A strided region of `src` into a strided region of `dst`, both of `dims`. */
struct RvCopy {
    const void* src;
    void* dst;
    long long n;
    long long src_offset, dst_offset;
    int rank;
    long long dims[8];
    long long src_strides[8];
    long long dst_strides[8];
};
template <class U>
__device__ void copy(const RvCopy p) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += (long long)gridDim.x * blockDim.x) {
        long long rest = i, s = p.src_offset, d = p.dst_offset;
        for (int k = p.rank - 1; k >= 0; --k) {
            long long idx = k == 0 ? rest : rest % p.dims[k];
            rest = k == 0 ? 0 : rest / p.dims[k];
            s += idx * p.src_strides[k];
            d += idx * p.dst_strides[k];
        }
        ((U*)p.dst)[d] = ((const U*)p.src)[s];
    }
}

/* A scalar operand read on the device in its own dtype, as f64: kind 0 f64,
   1 f32, 2 i64, 3 i32 (UpdateParams::scalar_kind). */
__device__ __forceinline__ double rv_scalar(const void* p, int kind) {
    if (kind == 1) return (double)*(const float*)p;
    if (kind == 2) return (double)*(const long long*)p;
    if (kind == 3) return (double)*(const int*)p;
    return *(const double*)p;
}

/* One optimizer step of the rules of op::optim::UpdateRule, in their
   decomposition's order of operations; lr and step are read on the device
   in their own dtypes (no host round trip, no cast kernels). Rule 0 SGD,
   1 momentum (h1 momentum, flag nesterov), 2 Adam (h1 b1, h2 b2, h3 eps,
   h4 weight decay), 3 RMSProp (h1 rho, h2 eps), 4 Adagrad (h1 eps). */
struct RvUpdate {
    const void* w; const void* g; const void* s1; const void* s2;
    void* w_out; void* s1_out; void* s2_out;
    const void* lr; const void* step;
    long long n;
    double h1, h2, h3, h4;
    int rule, flag, lr_kind, step_kind;
};
template <class T>
__device__ void apply_update(const RvUpdate p) {
    typedef typename Num<T>::acc A;
    const double lr64 = rv_scalar(p.lr, p.lr_kind), t = rv_scalar(p.step, p.step_kind);
    const A lr = (A)lr64;
    const T* w = (const T*)p.w; const T* g = (const T*)p.g;
    const T* s1 = (const T*)p.s1; const T* s2 = (const T*)p.s2;
    T* wo = (T*)p.w_out; T* s1o = (T*)p.s1_out; T* s2o = (T*)p.s2_out;
    const A alpha = p.rule == 2 ? (A)(lr64 * sqrt(1.0 - pow(p.h2, t)) / (1.0 - pow(p.h1, t))) : (A)0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += (long long)gridDim.x * blockDim.x) {
        A wi = Num<T>::ld(w[i]), gi = Num<T>::ld(g[i]);
        if (p.rule == 0) {
            wo[i] = Num<T>::st(wi - gi * lr);
        } else if (p.rule == 1) {
            A m = Num<T>::ld(s1[i]) * (A)p.h1 - gi * lr;
            A st = p.flag ? m * (A)p.h1 - gi * lr : m;
            wo[i] = Num<T>::st(wi + st);
            s1o[i] = Num<T>::st(m);
        } else if (p.rule == 2) {
            A m0 = Num<T>::ld(s1[i]), v0 = Num<T>::ld(s2[i]);
            A m = m0 + (gi - m0) * (A)(1.0 - p.h1);
            A v = v0 + (gi * gi - v0) * (A)(1.0 - p.h2);
            A wd = p.h4 > 0.0 ? wi - (wi * (A)p.h4) * lr : wi;
            wo[i] = Num<T>::st(wd - (m * alpha) / (rv_sqrt(v) + (A)p.h3));
            s1o[i] = Num<T>::st(m);
            s2o[i] = Num<T>::st(v);
        } else if (p.rule == 3) {
            A ms = Num<T>::ld(s1[i]) * (A)p.h1 + (gi * (A)(1.0 - p.h1)) * gi;
            wo[i] = Num<T>::st(wi - (gi * lr) / rv_sqrt(ms + (A)p.h2));
            s1o[i] = Num<T>::st(ms);
        } else {
            A acc = Num<T>::ld(s1[i]) + gi * gi;
            wo[i] = Num<T>::st(wi - (gi * lr) / rv_sqrt(acc + (A)p.h1));
            s1o[i] = Num<T>::st(acc);
        }
    }
}

/* Softmax or log-softmax along rows of a contiguous [rows, L] input, one
   block per row: the max, the sum of exp(x - max), then e / s or z - log s
   (the decomposition's formulas). */
template <class TA> __device__ TA rv_block_reduce(TA v, bool is_max) {
    __shared__ TA warps[32];
    for (int o = 16; o > 0; o >>= 1) { TA w = rv_shfl(v, o); v = is_max ? ((v > w || v != v) ? v : w) : v + w; }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) warps[warp] = v;
    __syncthreads();
    int nw = (blockDim.x + 31) >> 5;
    v = lane < nw ? warps[lane] : (is_max ? Lim<TA>::lo() : (TA)0);
    for (int o = 16; o > 0; o >>= 1) { TA w = rv_shfl(v, o); v = is_max ? ((v > w || v != v) ? v : w) : v + w; }
    return __shfl_sync(0xffffffffu, v, 0);
}
template <class T, bool LOG>
__device__ void softmax(const T* in, T* out, long long L) {
    typedef typename Num<T>::acc A;
    const T* x = in + blockIdx.x * L;
    T* y = out + blockIdx.x * L;
    A m = Lim<A>::lo();
    for (long long i = threadIdx.x; i < L; i += blockDim.x) { A v = Num<T>::ld(x[i]); m = (m > v || m != m) ? m : v; }
    m = rv_block_reduce<A>(m, true);
    A s = 0;
    for (long long i = threadIdx.x; i < L; i += blockDim.x) s += rv_exp(Num<T>::ld(x[i]) - m);
    s = rv_block_reduce<A>(s, false);
    if (LOG) {
        A ls = rv_log(s);
        for (long long i = threadIdx.x; i < L; i += blockDim.x) y[i] = Num<T>::st((Num<T>::ld(x[i]) - m) - ls);
    } else {
        for (long long i = threadIdx.x; i < L; i += blockDim.x) y[i] = Num<T>::st(rv_exp(Num<T>::ld(x[i]) - m) / s);
    }
}

/* The CPU's counter-based random stream (op::creation::RandomStream):
   Philox-4x32-10 of (block, stream) under the seed, the same uniforms and
   Box-Muller, so a seed gives the same numbers on both devices (f64 library
   functions may differ in the last bit). dist 0 uniform, 1 uniform int,
   2 normal, 3 truncated normal; `wide` for f64; `bits` 11 (f16) or 8 (bf16)
   for uniforms, else 24. The stream is read from `stream_at` where set (a
   recorded graph's replays each draw new numbers), and an offset that
   makes the seed from `seed_at` (a step counter on the device, read
   without a host round trip). */
struct RvRandom {
    void* out;
    long long n;
    unsigned int k0, k1;
    unsigned long long stream;
    double a, b;
    long long ilow, ihigh;
    int dist, wide, bits;
    const unsigned long long* stream_at;
    const long long* seed_at;
};
/* The seed a tensor offset makes with the op's own: op::creation::offset_seed. */
__device__ __forceinline__ unsigned long long rv_splitmix64(unsigned long long z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
__device__ __forceinline__ void rv_philox(unsigned int c[4], unsigned int k0, unsigned int k1) {
    for (int r = 0; r < 10; ++r) {
        unsigned long long p0 = 0xD2511F53ull * c[0], p1 = 0xCD9E8D57ull * c[2];
        unsigned int n0 = (unsigned int)(p1 >> 32) ^ c[1] ^ k0, n1 = (unsigned int)p1;
        unsigned int n2 = (unsigned int)(p0 >> 32) ^ c[3] ^ k1, n3 = (unsigned int)p0;
        c[0] = n0; c[1] = n1; c[2] = n2; c[3] = n3;
        k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
    }
}
__device__ __forceinline__ double rv_unit_f32(unsigned int x) { return (double)(x >> 8) * (1.0 / 16777216.0); }
__device__ __forceinline__ double rv_unit_bits(unsigned int x, int bits) { return (double)(x >> (32 - bits)) / (double)(1ull << bits); }
__device__ __forceinline__ double rv_unit_f64(unsigned int hi, unsigned int lo) {
    return (double)((((unsigned long long)hi << 32) | lo) >> 11) * (1.0 / 9007199254740992.0);
}
__device__ __forceinline__ void rv_box_muller(double u1, double u2, double* z0, double* z1) {
    double r = sqrt(-2.0 * log(1.0 - u1));
    double t = 2.0 * 3.141592653589793 * u2;
    *z0 = r * cos(t);
    *z1 = r * sin(t);
}
__device__ __forceinline__ void rv_block(const RvRandom& p, long long blk, unsigned int attempt, unsigned int c[4]) {
    c[0] = (unsigned int)blk; c[1] = (unsigned int)((unsigned long long)blk >> 32);
    c[2] = (unsigned int)p.stream; c[3] = ((unsigned int)(p.stream >> 32)) ^ (attempt * 0x9E3779B9u);
    rv_philox(c, p.k0, p.k1);
}
template <class T>
__device__ void random(const RvRandom given) {
    RvRandom p = given;
    if (p.stream_at) p.stream = *p.stream_at;
    if (p.seed_at) {
        unsigned long long seed = ((unsigned long long)p.k1 << 32) | p.k0;
        seed = rv_splitmix64(seed ^ rv_splitmix64((unsigned long long)*p.seed_at));
        p.k0 = (unsigned int)seed;
        p.k1 = (unsigned int)(seed >> 32);
    }
    const int per = p.dist == 3 ? 1 : ((p.wide || p.dist == 1) ? 2 : 4);
    const long long blocks = (p.n + per - 1) / per;
    T* out = (T*)p.out;
    for (long long blk = (long long)blockIdx.x * blockDim.x + threadIdx.x; blk < blocks; blk += (long long)gridDim.x * blockDim.x) {
        unsigned int c[4];
        double v[4] = {0.0, 0.0, 0.0, 0.0};
        if (p.dist == 1) {
            rv_block(p, blk, 0, c);
            unsigned long long span = (unsigned long long)(p.ihigh - p.ilow);
            for (int l = 0; l < 2; ++l) {
                long long i = blk * 2 + l;
                unsigned long long r = ((unsigned long long)c[2 * l] << 32) | c[2 * l + 1];
                if (i < p.n) out[i] = Num<T>::st((typename Num<T>::acc)(long long)((unsigned long long)p.ilow + r % span));
            }
            continue;
        }
        if (p.dist == 0) {
            rv_block(p, blk, 0, c);
            for (int l = 0; l < per; ++l) {
                double u = p.wide ? rv_unit_f64(c[2 * l], c[2 * l + 1]) : (p.bits != 24 ? rv_unit_bits(c[l], p.bits) : rv_unit_f32(c[l]));
                v[l] = p.a + (p.b - p.a) * u;
            }
        } else if (p.dist == 2) {
            rv_block(p, blk, 0, c);
            double z[4];
            if (p.wide) {
                rv_box_muller(rv_unit_f64(c[0], c[1]), rv_unit_f64(c[2], c[3]), &z[0], &z[1]);
            } else {
                rv_box_muller(rv_unit_f32(c[0]), rv_unit_f32(c[1]), &z[0], &z[1]);
                rv_box_muller(rv_unit_f32(c[2]), rv_unit_f32(c[3]), &z[2], &z[3]);
            }
            for (int l = 0; l < per; ++l) v[l] = p.a + p.b * z[l];
        } else {
            double z = 0.0;
            for (unsigned int attempt = 0; attempt < 64; ++attempt) {
                rv_block(p, blk, attempt, c);
                double u1 = p.wide ? rv_unit_f64(c[0], c[1]) : rv_unit_f32(c[0]);
                double u2 = p.wide ? rv_unit_f64(c[2], c[3]) : rv_unit_f32(c[1]);
                double z0, z1;
                rv_box_muller(u1, u2, &z0, &z1);
                if (fabs(z0) <= 2.0) { z = z0; break; }
            }
            v[0] = p.a + p.b * z;
        }
        for (int l = 0; l < per; ++l) {
            long long i = blk * per + l;
            if (i < p.n) out[i] = Num<T>::st((typename Num<T>::acc)v[l]);
        }
    }
}

/* Gather (TensorFlow's GatherV2) over params viewed as [B, O, A, I] and
   indices as [B, K]: out[b, o, k, i] = params[b, o, idx[b, k], i]. An index
   outside [0, A) sets the error word to 3 (the launcher reports it, as the
   CPU does) and reads nothing. With `add`, the scatter-add that is its
   gradient: out (zeroed) [b, o, idx, i] += updates[b, o, k, i]. */
struct RvGather {
    const void* src; const void* idx; void* out; int* error;
    long long B, O, A, I, K;
    int idx64;
};
template <class U>
__device__ void gather(const RvGather p) {
    long long n = p.B * p.O * p.K * p.I;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += (long long)gridDim.x * blockDim.x) {
        long long i = t % p.I, r = t / p.I;
        long long k = r % p.K; r /= p.K;
        long long o = r % p.O, b = r / p.O;
        long long ix = p.idx64 ? ((const long long*)p.idx)[b * p.K + k] : (long long)((const int*)p.idx)[b * p.K + k];
        if (ix < 0 || ix >= p.A) { *p.error = 3; ((U*)p.out)[t] = (U)0; continue; }
        ((U*)p.out)[t] = ((const U*)p.src)[((b * p.O + o) * p.A + ix) * p.I + i];
    }
}
template <class T>
__device__ void scatter_add(const RvGather p) {
    long long n = p.B * p.O * p.K * p.I;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += (long long)gridDim.x * blockDim.x) {
        long long i = t % p.I, r = t / p.I;
        long long k = r % p.K; r /= p.K;
        long long o = r % p.O, b = r / p.O;
        long long ix = p.idx64 ? ((const long long*)p.idx)[b * p.K + k] : (long long)((const int*)p.idx)[b * p.K + k];
        if (ix < 0 || ix >= p.A) { *p.error = 3; continue; }
        atomicAdd(&((T*)p.out)[((b * p.O + o) * p.A + ix) * p.I + i], ((const T*)p.src)[t]);
    }
}

/* GatherNd over contiguous params viewed as [D0, ..., D(K-1), I] and
   indices as [V, K]: out[v, i] = params[idx[v], i]. An index out of range
   sets the error word to 3 and writes 0. scatter_nd is its transpose (and
   gather_nd's gradient): out (zeroed) [idx[v], i] += updates[v, i], so
   duplicates sum, as TensorFlow's ScatterNd. n = V * I. */
struct RvGatherNd {
    const void* src; const void* idx; void* out; int* error;
    long long n, I;
    long long dims[8];
    int K, idx64;
};
/* The row of params that index vector v names, or -1 when out of range. */
__device__ __forceinline__ long long rv_nd_row(const RvGatherNd& p, long long v) {
    long long row = 0;
    for (int d = 0; d < p.K; ++d) {
        long long ix = p.idx64 ? ((const long long*)p.idx)[v * p.K + d] : (long long)((const int*)p.idx)[v * p.K + d];
        if (ix < 0 || ix >= p.dims[d]) return -1;
        row = row * p.dims[d] + ix;
    }
    return row;
}
template <class U>
__device__ void gather_nd(const RvGatherNd p) {
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < p.n; t += (long long)gridDim.x * blockDim.x) {
        long long row = rv_nd_row(p, t / p.I);
        if (row < 0) { *p.error = 3; ((U*)p.out)[t] = (U)0; continue; }
        ((U*)p.out)[t] = ((const U*)p.src)[row * p.I + t % p.I];
    }
}
__device__ __forceinline__ void rv_atomic_add(float* a, float v) { atomicAdd(a, v); }
__device__ __forceinline__ void rv_atomic_add(double* a, double v) { atomicAdd(a, v); }
__device__ __forceinline__ void rv_atomic_add(int* a, int v) { atomicAdd(a, v); }
__device__ __forceinline__ void rv_atomic_add(unsigned int* a, unsigned int v) { atomicAdd(a, v); }
__device__ __forceinline__ void rv_atomic_add(unsigned long long* a, unsigned long long v) { atomicAdd(a, v); }
/* Two's complement: the unsigned sum wraps to the signed one's bits. */
__device__ __forceinline__ void rv_atomic_add(long long* a, long long v) {
    atomicAdd((unsigned long long*)a, (unsigned long long)v);
}
template <class T>
__device__ void scatter_nd(const RvGatherNd p) {
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < p.n; t += (long long)gridDim.x * blockDim.x) {
        long long row = rv_nd_row(p, t / p.I);
        if (row < 0) { *p.error = 3; continue; }
        rv_atomic_add(&((T*)p.out)[row * p.I + t % p.I], ((const T*)p.src)[t]);
    }
}

/* TopKV2 along the rows of a contiguous [rows, n] input, in passes of at
   most RV_TOPK_CAP candidates a block. Block (row, c) sorts chunk c of the
   row's m candidates (positions in the row; the row itself when `cand` is
   null) with a bitonic network in shared memory, in the CPU's order:
   larger first, NaN before all, -0 equal to +0, ties by position. It keeps
   the first `keep`: positions into `next` ([rows, chunks, keep]) for another
   pass, or, where `vals` is set (one chunk), the values and their indices.
   A missing candidate is -1 and sorts after every other. */
#define RV_TOPK_CAP 2048
__device__ __forceinline__ unsigned long long rv_order(float f) {
    if (f != f) return ~0ull;
    unsigned int u = __float_as_uint(f == 0.0f ? 0.0f : f);
    return (unsigned long long)((u & 0x80000000u) ? ~u : (u | 0x80000000u));
}
__device__ __forceinline__ unsigned long long rv_order(double f) {
    if (f != f) return ~0ull;
    unsigned long long u = (unsigned long long)__double_as_longlong(f == 0.0 ? 0.0 : f);
    return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}
__device__ __forceinline__ unsigned long long rv_order_signed(long long x) {
    return (unsigned long long)x ^ 0x8000000000000000ull;
}
__device__ __forceinline__ unsigned long long rv_order(signed char x) { return rv_order_signed(x); }
__device__ __forceinline__ unsigned long long rv_order(short x) { return rv_order_signed(x); }
__device__ __forceinline__ unsigned long long rv_order(int x) { return rv_order_signed(x); }
__device__ __forceinline__ unsigned long long rv_order(long long x) { return rv_order_signed(x); }
__device__ __forceinline__ unsigned long long rv_order(unsigned char x) { return x; }
__device__ __forceinline__ unsigned long long rv_order(unsigned short x) { return x; }
__device__ __forceinline__ unsigned long long rv_order(unsigned int x) { return x; }
__device__ __forceinline__ unsigned long long rv_order(unsigned long long x) { return x; }
/* Whether entry (ka, pa) comes before (kb, pb). */
__device__ __forceinline__ bool rv_topk_before(unsigned long long ka, int pa, unsigned long long kb, int pb) {
    if (pa < 0) return false;
    if (pb < 0) return true;
    return ka > kb || (ka == kb && pa < pb);
}
template <class T, class TI>
__device__ void top_k(const T* x, const int* cand, long long n, long long m, int keep, T* vals, TI* out_idx, int* next) {
    __shared__ unsigned long long keys[RV_TOPK_CAP];
    __shared__ int pos[RV_TOPK_CAP];
    long long row = blockIdx.x;
    long long lo = (long long)blockIdx.y * RV_TOPK_CAP;
    int len = (int)(m - lo < RV_TOPK_CAP ? m - lo : RV_TOPK_CAP);
    int size_p = 1;
    while (size_p < len) size_p <<= 1;
    const T* xr = x + row * n;
    for (int j = threadIdx.x; j < size_p; j += blockDim.x) {
        int c = j < len ? (cand ? cand[row * m + lo + j] : (int)(lo + j)) : -1;
        pos[j] = c;
        keys[j] = c < 0 ? 0ull : rv_order(Num<T>::ld(xr[c]));
    }
    for (int size = 2; size <= size_p; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            __syncthreads();
            for (int i = threadIdx.x; i < size_p; i += blockDim.x) {
                int j = i ^ stride;
                if (j <= i) continue;
                bool swap = (i & size) == 0 ? rv_topk_before(keys[j], pos[j], keys[i], pos[i])
                                            : rv_topk_before(keys[i], pos[i], keys[j], pos[j]);
                if (swap) {
                    unsigned long long k = keys[i]; keys[i] = keys[j]; keys[j] = k;
                    int q = pos[i]; pos[i] = pos[j]; pos[j] = q;
                }
            }
        }
    }
    __syncthreads();
    for (int j = threadIdx.x; j < keep; j += blockDim.x) {
        int c = j < size_p ? pos[j] : -1;
        if (vals) {
            /* c >= 0 always here (a pass keeps k real candidates of the row's
               n >= k); kept safe against a changed plan. */
            if (c >= 0) vals[row * keep + j] = xr[c];
            out_idx[row * keep + j] = (TI)c;
        } else {
            next[(row * gridDim.y + blockIdx.y) * keep + j] = c;
        }
    }
}

/* C[b, i, j] = sum_p A[b, i, p] B[b, p, j] on strided operands, wrapping
   (integers: cuBLAS takes only floats). */
struct RvMatmul {
    const void* a; const void* b; void* c;
    long long batch, m, n, k;
    long long sab, sam, sak, sbb, sbk, sbn;
};
template <class T>
__device__ void matmul(const RvMatmul p) {
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= p.batch * p.m * p.n) return;
    long long j = t % p.n, i = (t / p.n) % p.m, bi = t / (p.n * p.m);
    const T* a = (const T*)p.a + bi * p.sab + i * p.sam;
    const T* b = (const T*)p.b + bi * p.sbb + j * p.sbn;
    T acc = 0;
    for (long long q = 0; q < p.k; ++q) acc += a[q * p.sak] * b[q * p.sbk];
    ((T*)p.c)[t] = acc;
}

/* Sliding windows (convolutions and pooling), channels-last, over three
   spatial dimensions (lower ranks lead with sizes of 1), indexed with I
   (int where every index fits, else long long). `n` is the launch's
   element count; `x`, `y` and `out` are the kernel's operands. */
struct RvWindow {
    const void* x; const void* y; void* out;
    long long n, r0, rows, img0, pos0, npos, c, cg;
    long long in[3], outp[3], win[3], stride[3], dil[3], pad[3];
};
/* Output position o (within an image) as (z, y, x). */
template <class I> __device__ __forceinline__ void rv_out_coords(const RvWindow& p, I o, I* q) {
    q[2] = o % (I)p.outp[2]; q[1] = (o / (I)p.outp[2]) % (I)p.outp[1]; q[0] = o / ((I)p.outp[2] * (I)p.outp[1]);
}
/* The input coordinate of tap k along dimension d of the window at output
   coordinate o; outside the input when negative or >= in[d]. */
template <class I> __device__ __forceinline__ I rv_tap_at(const RvWindow& p, int d, I o, I k) {
    return o * (I)p.stride[d] - (I)p.pad[d] + k * (I)p.dil[d];
}
/* The output coordinate along d whose tap k reads input coordinate i, or -1. */
template <class I> __device__ __forceinline__ I rv_tap_from(const RvWindow& p, int d, I i, I k) {
    I s = i + (I)p.pad[d] - k * (I)p.dil[d];
    if (s < 0 || s % (I)p.stride[d] != 0) return -1;
    s /= (I)p.stride[d];
    return s < (I)p.outp[d] ? s : -1;
}
/* Calls f(input position) for each tap of the window at output position o
   that lies inside the input, in window order. */
template <class I, class F> __device__ __forceinline__ void rv_for_taps(const RvWindow& p, I o, F f) {
    I q[3];
    rv_out_coords(p, o, q);
    for (I a = 0; a < (I)p.win[0]; ++a) {
        I z = rv_tap_at(p, 0, q[0], a);
        if (z < 0 || z >= (I)p.in[0]) continue;
        for (I b = 0; b < (I)p.win[1]; ++b) {
            I y = rv_tap_at(p, 1, q[1], b);
            if (y < 0 || y >= (I)p.in[1]) continue;
            for (I e = 0; e < (I)p.win[2]; ++e) {
                I x = rv_tap_at(p, 2, q[2], e);
                if (x < 0 || x >= (I)p.in[2]) continue;
                f((z * (I)p.in[1] + y) * (I)p.in[2] + x);
            }
        }
    }
}
/* Calls f(output position, tap) for each window that reads input position
   pos, in output-position order (taps backwards). */
template <class I, class F> __device__ __forceinline__ void rv_for_windows(const RvWindow& p, I pos, F f) {
    I i[3] = { pos / (I)(p.in[1] * p.in[2]), (pos / (I)p.in[2]) % (I)p.in[1], pos % (I)p.in[2] };
    for (I a = (I)p.win[0] - 1; a >= 0; --a) {
        I oz = rv_tap_from(p, 0, i[0], a);
        if (oz < 0) continue;
        for (I b = (I)p.win[1] - 1; b >= 0; --b) {
            I oy = rv_tap_from(p, 1, i[1], b);
            if (oy < 0) continue;
            for (I e = (I)p.win[2] - 1; e >= 0; --e) {
                I ox = rv_tap_from(p, 2, i[2], e);
                if (ox < 0) continue;
                f((oz * (I)p.outp[1] + oy) * (I)p.outp[2] + ox, (a * (I)p.win[1] + b) * (I)p.win[2] + e);
            }
        }
    }
}
/* The im2col matrix of rows r0 .. r0 + rows (batch x output positions):
   out [groups, rows, taps, cg], zeros for taps in the padding. */
template <class T, class I>
__device__ void im2col(const RvWindow p) {
    const I taps = (I)(p.win[0] * p.win[1] * p.win[2]), cg = (I)p.cg, depth = taps * cg, rows = (I)p.rows;
    const I opos = (I)(p.outp[0] * p.outp[1] * p.outp[2]), ipos = (I)(p.in[0] * p.in[1] * p.in[2]);
    for (I t = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; t < (I)p.n; t += (I)gridDim.x * (I)blockDim.x) {
        I ch = t % cg, tap = (t / cg) % taps, row = (t / depth) % rows, j = t / (depth * rows);
        I r = (I)p.r0 + row, img = r / opos, q[3], at[3];
        rv_out_coords(p, r % opos, q);
        I k[3] = { tap / (I)(p.win[1] * p.win[2]), (tap / (I)p.win[2]) % (I)p.win[1], tap % (I)p.win[2] };
        bool inside = true;
        for (int d = 0; d < 3; ++d) {
            at[d] = rv_tap_at(p, d, q[d], k[d]);
            inside = inside && at[d] >= 0 && at[d] < (I)p.in[d];
        }
        T v = (T)0;
        if (inside) {
            I pos = (at[0] * (I)p.in[1] + at[1]) * (I)p.in[2] + at[2];
            v = ((const T*)p.x)[(img * ipos + pos) * (I)p.c + j * cg + ch];
        }
        ((T*)p.out)[t] = v;
    }
}
/* The transpose: each element at input positions pos0 .. pos0 + npos of
   images img0 .. of `out` (the input gradient, channels c) adds the im2col
   entries of rows r0 .. r0 + rows (x: [groups, rows, taps, cg]) that read
   it, in output-position order (as the CPU's scatter adds them). */
template <class T, class I>
__device__ void col2im(const RvWindow p) {
    const I taps = (I)(p.win[0] * p.win[1] * p.win[2]), cg = (I)p.cg, c = (I)p.c, rows = (I)p.rows;
    const I opos = (I)(p.outp[0] * p.outp[1] * p.outp[2]), ipos = (I)(p.in[0] * p.in[1] * p.in[2]);
    const T* col = (const T*)p.x;
    for (I t = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; t < (I)p.n; t += (I)gridDim.x * (I)blockDim.x) {
        I ch = t % c, pos = (I)p.pos0 + (t / c) % (I)p.npos, img = (I)p.img0 + t / (c * (I)p.npos);
        I j = ch / cg, cc = ch % cg;
        T* dst = (T*)p.out + (img * ipos + pos) * c + ch;
        T acc = *dst;
        rv_for_windows(p, pos, [&](I o, I tap) {
            I row = img * opos + o - (I)p.r0;
            if (row >= 0 && row < rows) acc += col[((j * rows + row) * taps + tap) * cg + cc];
        });
        *dst = acc;
    }
}
/* The first largest element of channel ch in the window at output position
   o of image xi ([positions, c]): its position, or -1 for a window wholly
   in the padding. NaN never replaces a number; a number replaces NaN. */
template <class T, class I>
__device__ __forceinline__ I rv_window_argmax(const RvWindow& p, const T* xi, I o, I ch, T* best) {
    I arg = -1;
    rv_for_taps(p, o, [&](I pos) {
        T s = xi[pos * (I)p.c + ch];
        if (arg < 0 || s > *best || (*best != *best && s == s)) { *best = s; arg = pos; }
    });
    return arg;
}
/* Elements of the input inside the window at output position o. */
template <class I> __device__ __forceinline__ I rv_window_count(const RvWindow& p, I o) {
    I q[3], count = 1;
    rv_out_coords(p, o, q);
    for (int d = 0; d < 3; ++d) {
        I n = 0;
        for (I k = 0; k < (I)p.win[d]; ++k) {
            I at = rv_tap_at(p, d, q[d], k);
            n += at >= 0 && at < (I)p.in[d];
        }
        count *= n;
    }
    return count;
}
/* Pooling of x into out, one thread per output element; a window wholly
   in the padding gives 0. */
template <class T, class I, bool MAX>
__device__ void pool(const RvWindow p) {
    const I c = (I)p.c, opos = (I)(p.outp[0] * p.outp[1] * p.outp[2]), ipos = (I)(p.in[0] * p.in[1] * p.in[2]);
    for (I t = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; t < (I)p.n; t += (I)gridDim.x * (I)blockDim.x) {
        I ch = t % c, o = (t / c) % opos, img = t / (c * opos);
        const T* xi = (const T*)p.x + img * ipos * c;
        T v = (T)0;
        if (MAX) {
            T best = (T)0;
            if (rv_window_argmax(p, xi, o, ch, &best) >= 0) v = best;
        } else {
            rv_for_taps(p, o, [&](I pos) { v += xi[pos * c + ch]; });
            I n = rv_window_count(p, o);
            v = v / (T)(n > 0 ? n : 1);
        }
        ((T*)p.out)[t] = v;
    }
}
/* The position of each max-pooling window's first largest element of x
   (-1: none), one thread per output element, into out (I). */
template <class T, class I>
__device__ void pool_argmax(const RvWindow p) {
    const I c = (I)p.c, opos = (I)(p.outp[0] * p.outp[1] * p.outp[2]), ipos = (I)(p.in[0] * p.in[1] * p.in[2]);
    for (I t = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; t < (I)p.n; t += (I)gridDim.x * (I)blockDim.x) {
        I ch = t % c, o = (t / c) % opos, img = t / (c * opos);
        T best = (T)0;
        ((I*)p.out)[t] = rv_window_argmax(p, (const T*)p.x + img * ipos * c, o, ch, &best);
    }
}
/* The gradient of pooling: one thread per input element sums, in
   output-position order, dy (y) of the windows that take it (max: whose
   first largest element it is, by pool_argmax's positions in x; average:
   dy over the window's count). */
template <class T, class I, bool MAX>
__device__ void pool_grad(const RvWindow p) {
    const I c = (I)p.c, opos = (I)(p.outp[0] * p.outp[1] * p.outp[2]), ipos = (I)(p.in[0] * p.in[1] * p.in[2]);
    const T* dy = (const T*)p.y;
    const I* args = (const I*)p.x;
    for (I t = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; t < (I)p.n; t += (I)gridDim.x * (I)blockDim.x) {
        I ch = t % c, pos = (t / c) % ipos, img = t / (c * ipos);
        T acc = (T)0;
        rv_for_windows(p, pos, [&](I o, I) {
            I at = (img * opos + o) * c + ch;
            if (MAX) {
                if (args[at] == pos) acc += dy[at];
            } else {
                acc += dy[at] / (T)rv_window_count(p, o);
            }
        });
        ((T*)p.out)[t] = acc;
    }
}
/* MaxPoolGradGrad: y (shaped like x) read at each window's first largest
   element, one thread per output element; 0 for a window in the padding. */
template <class T, class I>
__device__ void max_pool_grad_grad(const RvWindow p) {
    const I c = (I)p.c, opos = (I)(p.outp[0] * p.outp[1] * p.outp[2]), ipos = (I)(p.in[0] * p.in[1] * p.in[2]);
    for (I t = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; t < (I)p.n; t += (I)gridDim.x * (I)blockDim.x) {
        I ch = t % c, o = (t / c) % opos, img = t / (c * opos);
        T best = (T)0;
        I arg = rv_window_argmax(p, (const T*)p.x + img * ipos * c, o, ch, &best);
        ((T*)p.out)[t] = arg >= 0 ? ((const T*)p.y)[(img * ipos + arg) * c + ch] : (T)0;
    }
}
"#;

/// The C++ type of `dtype`'s storage in the templates.
pub(crate) fn ctype(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::F32 => "float",
        DType::F64 => "double",
        DType::I32 => "int",
        DType::I64 => "long long",
        DType::U8 | DType::Bool => "unsigned char",
        DType::I8 => "signed char",
        DType::I16 => "short",
        DType::U16 => "unsigned short",
        DType::U32 => "unsigned int",
        DType::U64 => "unsigned long long",
        // Ops on complex values run on the host; the size is kept.
        DType::C64 => "float2",
        DType::C128 => "double2",
    }
}

/// The accumulator dtype of `f` over `dtype` (and of a two-pass
/// reduction's partials): f16/bf16 in f32; int32 and uint8 sums, means and
/// products in 64 bits (an exact mean, as TensorFlow's; sums and products
/// wrap to the same bits when stored); the rest in their own type.
pub(crate) fn acc_dtype(f: ReduceOp, dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        DType::I32 | DType::U8 | DType::I8 | DType::I16 | DType::U16 | DType::U32
            if matches!(f, ReduceOp::Sum | ReduceOp::Mean | ReduceOp::Prod) =>
        {
            DType::I64
        }
        d => d,
    }
}

/// One instantiation: its cache key and kernel name; the source is made
/// only when the kernel is compiled (a launch of a cached kernel builds
/// no 20 KB string).
pub(crate) struct Instance {
    pub key: String,
    pub name: String,
    params: &'static str,
    body: String,
}

impl Instance {
    /// The whole CUDA source of this instantiation.
    pub fn source(&self) -> String {
        let mut source = String::from(PRELUDE);
        source.push_str(TEMPLATES);
        source
            .push_str(&format!("\nextern \"C\" __global__ void {}({}) {{ {}; }}\n", self.name, self.params, self.body));
        source
    }
}

/// A hash of the shared source: part of every key, so a changed template
/// is a new kernel (in memory and in the disk cache).
fn templates_hash() -> u64 {
    static HASH: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *HASH.get_or_init(|| {
        let mut text = String::from(PRELUDE);
        text.push_str(TEMPLATES);
        super::codegen::fnv1a(text.as_bytes())
    })
}

fn instance(name: String, params: &'static str, body: &str) -> Instance {
    let call = super::codegen::fnv1a(format!("{params}|{body}").as_bytes());
    Instance { key: format!("{name}_{:016x}{call:016x}", templates_hash()), name, params, body: body.to_string() }
}

fn ident(dtype: DType) -> String {
    dtype.to_string()
}

fn op_struct(f: ReduceOp) -> &'static str {
    match f {
        ReduceOp::Sum | ReduceOp::Mean => "OpSum",
        ReduceOp::Prod => "OpProd",
        ReduceOp::Max => "OpMax",
        ReduceOp::Min => "OpMin",
        ReduceOp::Any => "OpAny",
        ReduceOp::All => "OpAll",
    }
}

/// A reduction pass: `rows` (inner extent 1) or columns, reading `input`
/// (the value's dtype, or the accumulator's in a second pass), writing the
/// result as `out` when `last`, else partials.
pub(crate) fn reduce(f: ReduceOp, rows: bool, input: DType, out: DType, last: bool) -> Instance {
    let (ti, ta, to) = (ctype(input), ctype(acc_dtype(f, out)), ctype(out));
    let mean = matches!(f, ReduceOp::Mean);
    let kind = if rows { "rows" } else { "cols" };
    let name = format!(
        "rv_reduce_{kind}_{}_{}_{}_{}",
        format!("{f:?}").to_lowercase(),
        ident(input),
        ident(out),
        if last { "last" } else { "part" }
    );
    let args = format!("<{ti}, {ta}, {to}, {}, {mean}, {last}>", op_struct(f));
    if rows {
        instance(
            name,
            "const void* in, void* out, long long rows, long long R, int parts, long long count",
            &format!("reduce_rows{args}((const {ti}*)in, out, rows, R, parts, count)"),
        )
    } else {
        instance(
            name,
            "const void* in, void* out, long long outer, long long R, long long inner, int parts, long long count",
            &format!("reduce_cols{args}((const {ti}*)in, out, outer, R, inner, parts, count)"),
        )
    }
}

/// The index reduction of `input` into `out` (an integer dtype).
pub(crate) fn arg_reduce(f: ArgOp, input: DType, out: DType) -> Instance {
    let max = matches!(f, ArgOp::ArgMax);
    let (ti, to) = (ctype(input), ctype(out));
    instance(
        format!("rv_arg_{}_{}_{}", if max { "max" } else { "min" }, ident(input), ident(out)),
        "const void* in, void* out, long long outer, long long R, long long inner",
        &format!("arg_reduce<{ti}, {to}, {max}>((const {ti}*)in, ({to}*)out, outer, R, inner)"),
    )
}

/// The scan of `dtype`.
pub(crate) fn scan(f: ScanOp, dtype: DType) -> Instance {
    let prod = matches!(f, ScanOp::Cumprod);
    let t = ctype(dtype);
    instance(
        format!("rv_scan_{}_{}", if prod { "prod" } else { "sum" }, ident(dtype)),
        "const void* in, void* out, long long outer, long long R, long long inner, int exclusive, int reverse",
        &format!("scan<{t}, {prod}>((const {t}*)in, ({t}*)out, outer, R, inner, exclusive, reverse)"),
    )
}

/// `start + i * delta` into `dtype`.
pub(crate) fn range(dtype: DType) -> Instance {
    let t = ctype(dtype);
    instance(
        format!("rv_range_{}", ident(dtype)),
        "void* out, long long n, double start, double delta, long long istart, long long idelta, int integer",
        &format!("range<{t}>(({t}*)out, n, start, delta, istart, idelta, integer)"),
    )
}

/// The unsigned type of `size` bytes.
fn bits_type(size: usize) -> &'static str {
    match size {
        1 => "unsigned char",
        2 => "unsigned short",
        4 => "unsigned int",
        _ => "unsigned long long",
    }
}

/// A fill of elements of `size` bytes.
pub(crate) fn fill(size: usize) -> Instance {
    let u = bits_type(size);
    instance(
        format!("rv_fill_{size}"),
        "void* out, long long n, unsigned long long bits",
        &format!("fill<{u}>(({u}*)out, n, bits)"),
    )
}

/// A strided copy of elements of `size` bytes ([`CopyParams`]).
pub(crate) fn copy(size: usize) -> Instance {
    instance(format!("rv_copy_{size}"), "const RvCopy p", &format!("copy<{}>(p)", bits_type(size)))
}

/// The strided integer matrix product ([`MatmulParams`]).
pub(crate) fn matmul(dtype: DType) -> Instance {
    instance(format!("rv_matmul_{}", ident(dtype)), "const RvMatmul p", &format!("matmul<{}>(p)", ctype(dtype)))
}

/// Softmax (or log-softmax) along the rows of `dtype` (a float).
pub(crate) fn softmax(dtype: DType, log: bool) -> Instance {
    let t = ctype(dtype);
    instance(
        format!("rv_{}softmax_{}", if log { "log_" } else { "" }, ident(dtype)),
        "const void* in, void* out, long long L",
        &format!("softmax<{t}, {log}>((const {t}*)in, ({t}*)out, L)"),
    )
}

/// A gather of elements of `size` bytes ([`GatherParams`]).
pub(crate) fn gather(size: usize) -> Instance {
    instance(format!("rv_gather_{size}"), "const RvGather p", &format!("gather<{}>(p)", bits_type(size)))
}

/// The scatter-add of `dtype` (f32, f64, i32: what `atomicAdd` takes).
pub(crate) fn scatter_add(dtype: DType) -> Instance {
    instance(
        format!("rv_scatter_add_{}", ident(dtype)),
        "const RvGather p",
        &format!("scatter_add<{}>(p)", ctype(dtype)),
    )
}

/// A gather_nd of elements of `size` bytes ([`GatherNdParams`]).
pub(crate) fn gather_nd(size: usize) -> Instance {
    instance(format!("rv_gather_nd_{size}"), "const RvGatherNd p", &format!("gather_nd<{}>(p)", bits_type(size)))
}

/// The scatter_nd of `dtype`, one of [`SCATTER_ND_DTYPES`].
pub(crate) fn scatter_nd(dtype: DType) -> Instance {
    instance(
        format!("rv_scatter_nd_{}", ident(dtype)),
        "const RvGatherNd p",
        &format!("scatter_nd<{}>(p)", ctype(dtype)),
    )
}

/// The dtypes [`scatter_nd`] adds atomically; the others run on the host.
pub(crate) const SCATTER_ND_DTYPES: [DType; 6] =
    [DType::F32, DType::F64, DType::I32, DType::I64, DType::U32, DType::U64];

/// [`gather_nd`]'s and [`scatter_nd`]'s argument; the C twin is `RvGatherNd`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GatherNdParams {
    pub src: u64,
    pub idx: u64,
    pub out: u64,
    pub error: u64,
    pub n: i64,
    pub i: i64,
    pub dims: [i64; 8],
    pub k: i32,
    pub idx64: i32,
}

impl GatherNdParams {
    /// The geometry of a gather_nd from `params` (or a scatter_nd into it)
    /// by `indices` (`[..., K]` of `index_dtype`) over elements of
    /// `element_bytes`, addresses left to the caller. `None` where the
    /// kernel does not take it and the CPU's kernel runs instead: indices
    /// not int32/int64, elements wider than 8 bytes (complex128), K above
    /// 8, or nothing to copy while index vectors still need the CPU's range
    /// check.
    pub(crate) fn new(
        params: &crate::tensor::Shape,
        indices: &crate::tensor::Shape,
        index_dtype: DType,
        element_bytes: usize,
    ) -> Option<Self> {
        let k = *indices.last()?;
        if !matches!(index_dtype, DType::I32 | DType::I64) || element_bytes > 8 || k > 8 || k > params.rank() {
            return None;
        }
        let vectors: usize = indices[..indices.rank() - 1].iter().product();
        let inner: usize = params[k..].iter().product();
        if k > 0 && vectors > 0 && inner * vectors == 0 {
            return None;
        }
        let mut dims = [0i64; 8];
        for (d, &n) in params[..k].iter().enumerate() {
            dims[d] = n as i64;
        }
        Some(GatherNdParams {
            n: (vectors * inner) as i64,
            i: inner as i64,
            dims,
            k: k as i32,
            idx64: (index_dtype == DType::I64) as i32,
            ..Default::default()
        })
    }
}

/// Candidates one top-k block sorts (`RV_TOPK_CAP`).
pub(crate) const TOPK_CAP: usize = 2048;

/// The top-k of `dtype` with `index` (i32 or i64) positions.
pub(crate) fn top_k(dtype: DType, index: DType) -> Instance {
    let (t, ti) = (ctype(dtype), ctype(index));
    instance(
        format!("rv_top_k_{}_{}", ident(dtype), ident(index)),
        "const void* x, const void* cand, long long n, long long m, int keep, void* vals, void* idx, void* next",
        &format!("top_k<{t}, {ti}>((const {t}*)x, (const int*)cand, n, m, keep, ({t}*)vals, ({ti}*)idx, (int*)next)"),
    )
}

/// The passes of a top-k of `k` over rows of `n`: the candidates each pass
/// reads per row (`m`) and its chunks, the last one a single chunk giving
/// the result. `None` where the kernel cannot take it (rows of 2^31 or
/// more, or `k` above half a chunk on rows longer than one).
pub(crate) fn top_k_passes(n: usize, k: usize) -> Option<Vec<(usize, usize)>> {
    if n > i32::MAX as usize || k == 0 || k > n || (n > TOPK_CAP && k > TOPK_CAP / 2) {
        return None;
    }
    let mut passes = Vec::new();
    let mut m = n;
    while m > TOPK_CAP {
        let chunks = m.div_ceil(TOPK_CAP);
        if chunks > 65535 {
            return None;
        }
        passes.push((m, chunks));
        m = chunks * k;
    }
    passes.push((m, 1));
    Some(passes)
}

/// A sliding-window kernel family (`RvWindow`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WindowKernel {
    /// The im2col matrix of a block of output rows.
    Im2col,
    /// Its transpose, added into the input gradient.
    Col2im,
    /// Max or average pooling.
    Pool(crate::op::window::PoolKind),
    /// Each max-pooling window's first largest element's position.
    PoolArgmax,
    /// Pooling's input gradient (max: from `PoolArgmax`'s positions).
    PoolGrad(crate::op::window::PoolKind),
    /// Max pooling's gradient's gradient.
    MaxPoolGradGrad,
}

/// Every window kernel.
#[cfg(test)]
pub(crate) const WINDOW_KERNELS: [WindowKernel; 8] = {
    use crate::op::window::PoolKind::{Avg, Max};
    [
        WindowKernel::Im2col,
        WindowKernel::Col2im,
        WindowKernel::Pool(Max),
        WindowKernel::Pool(Avg),
        WindowKernel::PoolArgmax,
        WindowKernel::PoolGrad(Max),
        WindowKernel::PoolGrad(Avg),
        WindowKernel::MaxPoolGradGrad,
    ]
};

/// The `kernel` of `dtype` (f32 or f64), 32-bit indexed where `narrow`.
pub(crate) fn window(kernel: WindowKernel, dtype: DType, narrow: bool) -> Instance {
    use crate::op::window::PoolKind;
    let (t, i) = (ctype(dtype), if narrow { "int" } else { "long long" });
    let max = |f: PoolKind| f == PoolKind::Max;
    let (family, call) = match kernel {
        WindowKernel::Im2col => ("im2col".to_string(), format!("im2col<{t}, {i}>(p)")),
        WindowKernel::Col2im => ("col2im".to_string(), format!("col2im<{t}, {i}>(p)")),
        WindowKernel::Pool(f) => (format!("pool_{f:?}"), format!("pool<{t}, {i}, {}>(p)", max(f))),
        WindowKernel::PoolGrad(f) => (format!("pool_grad_{f:?}"), format!("pool_grad<{t}, {i}, {}>(p)", max(f))),
        WindowKernel::PoolArgmax => ("pool_argmax".to_string(), format!("pool_argmax<{t}, {i}>(p)")),
        WindowKernel::MaxPoolGradGrad => ("max_pool_grad_grad".to_string(), format!("max_pool_grad_grad<{t}, {i}>(p)")),
    };
    let width = if narrow { 32 } else { 64 };
    instance(format!("rv_{}_{}_i{width}", family.to_lowercase(), ident(dtype)), "const RvWindow p", &call)
}

/// [`window`]'s argument; the C twin is `RvWindow`. Spatial arrays are
/// three long, lower ranks leading with sizes of 1 (padding 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct WindowParams {
    pub x: u64,
    pub y: u64,
    pub out: u64,
    pub n: i64,
    pub r0: i64,
    pub rows: i64,
    pub img0: i64,
    pub pos0: i64,
    pub npos: i64,
    pub c: i64,
    pub cg: i64,
    pub input: [i64; 3],
    pub output: [i64; 3],
    pub window: [i64; 3],
    pub strides: [i64; 3],
    pub dilations: [i64; 3],
    pub pad: [i64; 3],
}

/// [`gather`]'s and [`scatter_add`]'s argument; the C twin is `RvGather`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GatherParams {
    pub src: u64,
    pub idx: u64,
    pub out: u64,
    pub error: u64,
    pub b: i64,
    pub o: i64,
    pub a: i64,
    pub i: i64,
    pub k: i64,
    pub idx64: i32,
}

/// Random numbers of `dtype` ([`RandomParams`]).
pub(crate) fn random(dtype: DType) -> Instance {
    instance(format!("rv_random_{}", ident(dtype)), "const RvRandom p", &format!("random<{}>(p)", ctype(dtype)))
}

/// [`random`]'s argument; the C twin is `RvRandom`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RandomParams {
    pub out: u64,
    pub n: i64,
    pub k0: u32,
    pub k1: u32,
    pub stream: u64,
    pub a: f64,
    pub b: f64,
    pub ilow: i64,
    pub ihigh: i64,
    pub dist: i32,
    pub wide: i32,
    pub bits: i32,
    /// Where the stream is read when the kernel runs (0: `stream`).
    pub stream_at: u64,
    /// Where an i64 offset is read when the kernel runs, to make the seed
    /// with `k0`/`k1` as [`crate::op::creation::offset_seed`] does (0: none).
    pub seed_at: u64,
}

impl RandomParams {
    /// The kernel's parameters for samples of `dist` into `out` from the
    /// stream `(seed, stream)` (the output's address left to the caller);
    /// `None` for pairings the kernel does not draw (float distributions
    /// into integers, empty integer ranges).
    pub(crate) fn new(
        dist: &crate::op::creation::Distribution,
        out: &crate::op::Meta,
        seed: u64,
        stream: u64,
    ) -> Option<RandomParams> {
        use crate::op::creation::Distribution;
        let d = out.dtype;
        let mut p = RandomParams {
            n: out.shape.numel_known() as i64,
            k0: seed as u32,
            k1: (seed >> 32) as u32,
            stream,
            wide: (d == DType::F64) as i32,
            bits: match d {
                DType::F16 => 11,
                DType::BF16 => 8,
                _ => 24,
            },
            ..Default::default()
        };
        match *dist {
            Distribution::Uniform { low, high } if d.is_float() => (p.dist, p.a, p.b) = (0, low, high),
            Distribution::Normal { mean, stddev } if d.is_float() => (p.dist, p.a, p.b) = (2, mean, stddev),
            Distribution::TruncatedNormal { mean, stddev } if d.is_float() => (p.dist, p.a, p.b) = (3, mean, stddev),
            Distribution::UniformInt { low, high } if matches!(d, DType::I32 | DType::I64) && high > low => {
                (p.dist, p.ilow, p.ihigh) = (1, low, high)
            }
            _ => return None,
        }
        Some(p)
    }
}

/// An optimizer step over `dtype` ([`UpdateParams`]).
pub(crate) fn apply_update(dtype: DType) -> Instance {
    instance(format!("rv_update_{}", ident(dtype)), "const RvUpdate p", &format!("apply_update<{}>(p)", ctype(dtype)))
}

/// [`apply_update`]'s argument; the C twin is `RvUpdate`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct UpdateParams {
    pub w: u64,
    pub g: u64,
    pub s1: u64,
    pub s2: u64,
    pub w_out: u64,
    pub s1_out: u64,
    pub s2_out: u64,
    pub lr: u64,
    pub step: u64,
    pub n: i64,
    pub h: [f64; 4],
    pub rule: i32,
    pub flag: i32,
    pub lr_kind: i32,
    pub step_kind: i32,
}

impl UpdateParams {
    /// How the kernel reads a scalar operand of `dtype` (`rv_scalar`), or
    /// `None` where it must be cast to f64 first.
    pub(crate) fn scalar_kind(dtype: DType) -> Option<i32> {
        match dtype {
            DType::F64 => Some(0),
            DType::F32 => Some(1),
            DType::I64 => Some(2),
            DType::I32 => Some(3),
            _ => None,
        }
    }
}

/// [`copy`]'s argument; the C twin is `RvCopy`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CopyParams {
    pub src: u64,
    pub dst: u64,
    pub n: i64,
    pub src_offset: i64,
    pub dst_offset: i64,
    pub rank: i32,
    pub dims: [i64; 8],
    pub src_strides: [i64; 8],
    pub dst_strides: [i64; 8],
}

/// [`matmul`]'s argument; the C twin is `RvMatmul`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MatmulParams {
    pub a: u64,
    pub b: u64,
    pub c: u64,
    pub batch: i64,
    pub m: i64,
    pub n: i64,
    pub k: i64,
    pub sab: i64,
    pub sam: i64,
    pub sak: i64,
    pub sbb: i64,
    pub sbk: i64,
    pub sbn: i64,
}

/// Every instantiation compiles (NVRTC needs no GPU: where libnvrtc is
/// found, e.g. `LD_LIBRARY_PATH` at a pip `nvidia-cuda-nvrtc` wheel's lib,
/// each is compiled to PTX for sm_90; elsewhere the test says it skipped).
#[cfg(test)]
mod tests {
    use super::*;

    /// Whether libnvrtc loads; `RIVULET_REQUIRE_NVRTC=1` (CI) makes its
    /// absence a failure rather than a skip.
    pub(crate) fn nvrtc_present() -> bool {
        // SAFETY: only tries to open the library.
        let present = unsafe { cudarc::nvrtc::sys::is_culib_present() };
        assert!(
            present || std::env::var("RIVULET_REQUIRE_NVRTC").map_or(true, |v| v != "1"),
            "RIVULET_REQUIRE_NVRTC=1 but libnvrtc was not found (scripts/test.sh fetches it into target/nvrtc)"
        );
        present
    }

    /// What the gather_nd/scatter_nd kernel takes, and what it leaves to
    /// the CPU's kernel.
    #[test]
    fn gather_nd_geometry_leaves_to_the_cpu_what_the_kernel_cannot_take() {
        use crate::tensor::Shape;
        let s = |d: &[usize]| Shape::new(d);
        let p = GatherNdParams::new(&s(&[4, 3, 5]), &s(&[2, 2, 2]), DType::I64, 4).expect("taken");
        assert_eq!((p.n, p.i, p.k, p.idx64, &p.dims[..3]), (20, 5, 2, 1, &[4i64, 3, 0][..]));
        assert!(GatherNdParams::new(&s(&[4, 3]), &s(&[2, 1]), DType::F32, 4).is_none(), "float indices");
        assert!(GatherNdParams::new(&s(&[4, 3]), &s(&[2, 1]), DType::I32, 16).is_none(), "complex128");
        assert!(GatherNdParams::new(&s(&[1; 9]), &s(&[2, 9]), DType::I32, 4).is_none(), "depth 9");
        assert!(GatherNdParams::new(&s(&[4, 0]), &s(&[2, 1]), DType::I32, 4).is_none(), "empty rows, indices to check");
        let empty = GatherNdParams::new(&s(&[4, 3]), &s(&[0, 1]), DType::I32, 4).expect("no indices");
        assert_eq!(empty.n, 0);
        let whole = GatherNdParams::new(&s(&[4, 3]), &s(&[2, 0]), DType::I32, 8).expect("depth 0");
        assert_eq!((whole.n, whole.i), (24, 12));
    }

    #[test]
    fn every_template_instance_compiles_with_nvrtc() {
        if !nvrtc_present() {
            eprintln!("skipped: libnvrtc not found (no CUDA toolkit here)");
            return;
        }
        let mut dtypes = vec![DType::F16, DType::BF16, DType::F32, DType::F64];
        dtypes.extend(super::super::codegen::INT_DTYPES);
        let mut all: Vec<Instance> = Vec::new();
        for &d in &dtypes {
            for f in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min, ReduceOp::Prod] {
                for rows in [true, false] {
                    all.push(reduce(f, rows, d, d, true));
                    all.push(reduce(f, rows, d, d, false));
                    all.push(reduce(f, rows, acc_dtype(f, d), d, true));
                }
            }
            for f in [ArgOp::ArgMax, ArgOp::ArgMin] {
                all.push(arg_reduce(f, d, DType::I64));
                all.push(arg_reduce(f, d, DType::I32));
            }
            if d.is_float() {
                all.push(softmax(d, false));
                all.push(softmax(d, true));
            }
            all.push(random(d));
            all.push(scan(ScanOp::Cumsum, d));
            all.push(scan(ScanOp::Cumprod, d));
            all.push(range(d));
            if !d.is_float() {
                all.push(matmul(d));
            } else {
                all.push(apply_update(d));
            }
            all.push(top_k(d, DType::I32));
            all.push(top_k(d, DType::I64));
        }
        for d in SCATTER_ND_DTYPES {
            all.push(scatter_nd(d));
        }
        for f in [ReduceOp::Any, ReduceOp::All] {
            all.push(reduce(f, true, DType::Bool, DType::Bool, true));
            all.push(reduce(f, false, DType::Bool, DType::Bool, false));
        }
        for d in [DType::F32, DType::F64, DType::I32] {
            all.push(scatter_add(d));
        }
        for d in [DType::F32, DType::F64] {
            for narrow in [true, false] {
                for k in WINDOW_KERNELS {
                    all.push(window(k, d, narrow));
                }
            }
        }
        for size in [1, 2, 4, 8] {
            all.push(gather(size));
            all.push(gather_nd(size));
            all.push(fill(size));
            all.push(copy(size));
        }
        let mut failed = Vec::new();
        for inst in &all {
            if let Err(e) = crate::backend::cuda::gpu::compile(&inst.source(), "sm_90") {
                failed.push(format!("{}: {e}", inst.name));
            }
        }
        assert!(failed.is_empty(), "{} of {} failed:\n{}", failed.len(), all.len(), failed.join("\n"));
    }

    /// The generated elementwise kernels of every unary and binary op on
    /// every dtype that op takes compile with NVRTC too (the codegen tests
    /// run them through the host compiler, whose dialect differs).
    #[test]
    fn generated_single_op_kernels_compile_with_nvrtc() {
        use crate::op::elementwise::{BinaryOp, UnaryOp};
        use crate::op::fused::{FusedProgram, Instr};
        use crate::op::Meta;
        use crate::tensor::Shape;
        if !nvrtc_present() {
            eprintln!("skipped: libnvrtc not found (no CUDA toolkit here)");
            return;
        }
        let mut dtypes = vec![DType::F16, DType::BF16, DType::F32, DType::F64, DType::Bool];
        dtypes.extend(super::super::codegen::INT_DTYPES);
        let meta = |d: DType| Meta::new(d, Shape::new(&[3, 5]));
        let mut failed = Vec::new();
        let mut compiled = 0;
        // Each program is one op; the op's own inference says which dtypes it takes.
        let mut try_one = |program: FusedProgram, ins: Vec<Meta>| {
            let op = match program.instrs.last() {
                Some(Instr::Unary(f, _)) => crate::op::Op::Unary { f: *f },
                Some(Instr::Binary(f, _, _)) => crate::op::Op::Binary { f: *f },
                Some(Instr::Cast(d, _)) => crate::op::Op::Cast { dtype: *d },
                _ => return,
            };
            let Ok(out) = op.infer(&ins).map(|m| m[0].clone()) else { return };
            for narrow in [false, true] {
                let made = crate::backend::cuda::codegen::fused_elementwise_indexed(&program, &ins, &out, narrow);
                let Ok(src) = made else { return };
                compiled += 1;
                if let Err(e) = crate::backend::cuda::gpu::compile(&src.source, "sm_90") {
                    failed.push(format!("{}: {e}", program.describe()));
                }
            }
        };
        for &d in &dtypes {
            for &f in UnaryOp::ALL {
                let p = FusedProgram { instrs: vec![Instr::Input(0), Instr::Unary(f, 0)], output: 1, reduce: None };
                try_one(p, vec![meta(d)]);
            }
            for &f in BinaryOp::ALL {
                let p = FusedProgram {
                    instrs: vec![Instr::Input(0), Instr::Input(1), Instr::Binary(f, 0, 1)],
                    output: 2,
                    reduce: None,
                };
                try_one(p, vec![meta(d), meta(d)]);
            }
            for &to in &dtypes {
                let p = FusedProgram { instrs: vec![Instr::Input(0), Instr::Cast(to, 0)], output: 1, reduce: None };
                try_one(p, vec![meta(d)]);
            }
        }
        assert!(compiled > 200, "only {compiled} programs were generated");
        assert!(failed.is_empty(), "{} of {compiled} failed:\n{}", failed.len(), failed.join("\n"));
    }
}

/// The templates run on the host: each CUDA thread an OS thread, blocks one
/// at a time, `__syncthreads` a barrier and `__shared__` the block's
/// statics, a warp shuffle an exchange between the warp's threads at two
/// barriers. Kernels whose threads meet only at barriers, shuffles and
/// atomics run as on a GPU, so the logic of the reduction, softmax, arg
/// reduction, scan, random, gather_nd, scatter_nd and top-k kernels (and
/// their launchers' pass plans) is checked against the CPU backend where
/// there is no GPU.
#[cfg(all(test, target_os = "linux"))]
pub(crate) mod emulated {
    use super::*;
    use crate::backend::cuda::codegen::tests::{value as host, HostLibrary};
    use crate::backend::Backend;
    use crate::op::Meta;
    use crate::tensor::{Shape, Value};
    use std::ffi::c_void;

    const SHIM: &str = r#"
#include <math.h>
#include <string.h>
#include <barrier>
#include <algorithm>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
struct RvDim { unsigned int x, y, z; };
static RvDim blockIdx, gridDim, blockDim;
static thread_local RvDim threadIdx;
static std::barrier<>* rv_barrier;
static std::mutex rv_atomics;
static inline void __syncthreads() { rv_barrier->arrive_and_wait(); }
static inline float __uint_as_float(unsigned int u) { float f; memcpy(&f, &u, 4); return f; }
static inline float __int_as_float(int u) { float f; memcpy(&f, &u, 4); return f; }
static inline unsigned int __float_as_uint(float f) { unsigned int u; memcpy(&u, &f, 4); return u; }
static inline double __longlong_as_double(long long u) { double f; memcpy(&f, &u, 8); return f; }
static inline long long __double_as_longlong(double f) { long long u; memcpy(&u, &f, 8); return u; }
template <class T> static inline T atomicAdd(T* p, T v) { std::lock_guard<std::mutex> g(rv_atomics); T o = *p; *p = o + v; return o; }
static inline int atomicExch(int* p, int v) { std::lock_guard<std::mutex> g(rv_atomics); int o = *p; *p = v; return o; }
/* Warp shuffles: each lane posts its value, its warp meets, each lane
   reads its source lane's, its warp meets again (before the slots are
   reused). A source past the warp (or the block) gives the lane its own
   value, as __shfl_down_sync does past the warp's width. */
static std::vector<std::barrier<>*> rv_warps;
static unsigned long long rv_lanes[1024][2];
template <class T> static inline T rv_exchange(T v, unsigned src, bool inside) {
    static_assert(sizeof(T) <= sizeof(rv_lanes[0]), "a shuffle moves at most 16 bytes");
    unsigned t = threadIdx.x, warp = t / 32, from = warp * 32 + src;
    memcpy(rv_lanes[t], &v, sizeof(T));
    rv_warps[warp]->arrive_and_wait();
    T r = v;
    if (inside && from < blockDim.x) memcpy(&r, rv_lanes[from], sizeof(T));
    rv_warps[warp]->arrive_and_wait();
    return r;
}
template <class T> static inline T __shfl_down_sync(unsigned, T v, int d) {
    unsigned lane = threadIdx.x % 32;
    return rv_exchange(v, lane + d, lane + d < 32);
}
template <class T> static inline T __shfl_sync(unsigned, T v, int src) { return rv_exchange(v, (unsigned)src % 32, true); }
static void rv_emulate(unsigned gx, unsigned gy, unsigned bx, const std::function<void()>& kernel) {
    gridDim = {gx, gy, 1};
    blockDim = {bx, 1, 1};
    for (unsigned y = 0; y < gy; ++y) {
        for (unsigned x = 0; x < gx; ++x) {
            blockIdx = {x, y, 0};
            std::barrier<> barrier(bx);
            rv_barrier = &barrier;
            std::vector<std::unique_ptr<std::barrier<>>> warps;
            rv_warps.clear();
            for (unsigned w = 0; w * 32 < bx; ++w) {
                warps.push_back(std::make_unique<std::barrier<>>(std::min(32u, bx - w * 32)));
                rv_warps.push_back(warps.back().get());
            }
            std::vector<std::thread> threads;
            for (unsigned t = 0; t < bx; ++t) {
                threads.emplace_back([&, t] {
                    threadIdx = {t, 0, 0};
                    kernel();
                    rv_warps[t / 32]->arrive_and_drop();
                    barrier.arrive_and_drop();
                });
            }
            for (auto& t : threads) t.join();
        }
    }
}
"#;

    /// A host library of `instances`, each with a launcher `host_<name>(grid
    /// x, grid y, block, params...)`; `None` (saying so) without a C++20
    /// compiler.
    pub(crate) fn build(tag: &str, instances: &[Instance]) -> Option<HostLibrary> {
        let mut source = format!("{SHIM}{}{}", super::super::codegen::PRELUDE, TEMPLATES);
        for inst in instances {
            let names: Vec<&str> = inst
                .params
                .split(',')
                .filter_map(|p| p.rsplit(|c: char| c.is_whitespace() || c == '*').next())
                .collect();
            source.push_str(&format!(
                "\nextern \"C\" void {0}({1}) {{ {2}; }}\nextern \"C\" void host_{0}(unsigned gx, unsigned gy, \
                 unsigned bx, {1}) {{ rv_emulate(gx, gy, bx, [&]() {{ {0}({3}); }}); }}\n",
                inst.name,
                inst.params,
                inst.body,
                names.join(", ")
            ));
        }
        HostLibrary::build(&format!("emulated-{tag}"), &source, &["-std=c++20", "-O1"])
    }

    /// The launcher of `inst` in `lib`.
    pub(crate) fn launcher(lib: &HostLibrary, inst: &Instance) -> *mut c_void {
        lib.symbol(&format!("host_{}", inst.name))
    }

    type NdLauncher = unsafe extern "C" fn(u32, u32, u32, GatherNdParams);
    type RandomLauncher = unsafe extern "C" fn(u32, u32, u32, RandomParams);
    type TopKLauncher = unsafe extern "C" fn(u32, u32, u32, u64, u64, i64, i64, i32, u64, u64, u64);

    type RowsLauncher = unsafe extern "C" fn(u32, u32, u32, u64, u64, i64, i64, i32, i64);
    type ColsLauncher = unsafe extern "C" fn(u32, u32, u32, u64, u64, i64, i64, i64, i32, i64);
    type AlongLauncher = unsafe extern "C" fn(u32, u32, u32, u64, u64, i64, i64, i64);
    type ScanLauncher = unsafe extern "C" fn(u32, u32, u32, u64, u64, i64, i64, i64, i32, i32);
    type SoftmaxLauncher = unsafe extern "C" fn(u32, u32, u32, u64, u64, i64);

    /// Elements of `bytes` of `dtype`, widened.
    fn decode(dtype: DType, bytes: &[u8]) -> Vec<f64> {
        match dtype {
            DType::F32 => bytes.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
            DType::F64 => bytes.chunks(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect(),
            DType::I32 => bytes.chunks(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
            DType::I64 => bytes.chunks(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
            d => panic!("decode {d}"),
        }
    }

    /// `got` and `want` alike: NaN where NaN, else within `tol` of the
    /// scale (0: equal).
    fn agree(what: &str, dtype: DType, got: &[u8], want: &[u8], tol: f64, scale: f64) {
        let (g, w) = (decode(dtype, got), decode(dtype, want));
        assert_eq!(g.len(), w.len(), "{what}: lengths");
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            let ok = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= tol * scale;
            assert!(ok, "{what}: element {i}: {a} on the emulated GPU, {b} on the CPU");
        }
    }

    /// A reduction over axis 1 of `x` (`[outer, R]` or `[outer, R,
    /// inner]`) as the CUDA backend launches it, with R in `parts`.
    fn run_reduce(lib: &HostLibrary, f: ReduceOp, x: &Value, parts: usize, out: DType) -> Vec<u8> {
        let d = x.shape().dims();
        let (outer, r, inner) = (d[0], d[1], d.get(2).copied().unwrap_or(1));
        let acc = acc_dtype(f, out);
        let xs = bytes(x);
        let total = outer * inner;
        let mut result = vec![0u8; total * out.size()];
        let mut partial = vec![0u8; total * parts * acc.size()];
        let (o, pp, count) = (result.as_mut_ptr() as u64, partial.as_mut_ptr() as u64, r as i64);
        // SAFETY: the launchers' signatures; every buffer is sized for its pass.
        unsafe {
            if d.len() == 2 {
                let pass = |last: bool, input: DType| {
                    std::mem::transmute::<*mut c_void, RowsLauncher>(launcher(lib, &reduce(f, true, input, out, last)))
                };
                if parts > 1 {
                    let rows = (outer * parts) as u32;
                    pass(false, x.dtype)(
                        rows,
                        1,
                        256,
                        xs.as_ptr() as u64,
                        pp,
                        outer as i64,
                        r as i64,
                        parts as i32,
                        count,
                    );
                    pass(true, acc)(outer as u32, 1, 256, pp, o, outer as i64, parts as i64, 1, count);
                } else {
                    pass(true, x.dtype)(outer as u32, 1, 256, xs.as_ptr() as u64, o, outer as i64, r as i64, 1, count);
                }
            } else {
                let pass = |last: bool, input: DType| {
                    std::mem::transmute::<*mut c_void, ColsLauncher>(launcher(lib, &reduce(f, false, input, out, last)))
                };
                let blocks = total.div_ceil(256) as u32;
                let (x0, o64, r64, i64_) = (xs.as_ptr() as u64, outer as i64, r as i64, inner as i64);
                if parts > 1 {
                    pass(false, x.dtype)(blocks, parts as u32, 256, x0, pp, o64, r64, i64_, parts as i32, count);
                    pass(true, acc)(blocks, 1, 256, pp, o, 1, parts as i64, total as i64, 1, count);
                } else {
                    pass(true, x.dtype)(blocks, 1, 256, x0, o, o64, r64, i64_, 1, count);
                }
            }
        }
        result
    }

    /// Row and column reductions, in one pass and in parts (the second
    /// pass over partials), with the warp-shuffle trees run lane by lane:
    /// the CPU's values (floats within rounding, NaN where NaN; integers,
    /// maxima and minima exactly).
    #[test]
    fn reductions_match_the_cpu_in_one_pass_and_in_parts() {
        let cases: Vec<(ReduceOp, DType, DType)> = vec![
            (ReduceOp::Sum, DType::F32, DType::F32),
            (ReduceOp::Mean, DType::F32, DType::F32),
            (ReduceOp::Max, DType::F32, DType::F32),
            (ReduceOp::Min, DType::F32, DType::F32),
            (ReduceOp::Sum, DType::F64, DType::F64),
            (ReduceOp::Prod, DType::F64, DType::F64),
            (ReduceOp::Sum, DType::I32, DType::I32),
            (ReduceOp::Mean, DType::I32, DType::I32),
            (ReduceOp::Max, DType::I64, DType::I64),
            (ReduceOp::Min, DType::I64, DType::I64),
            (ReduceOp::Sum, DType::I64, DType::I64),
        ];
        let mut insts = Vec::new();
        for &(f, input, out) in &cases {
            for rows in [true, false] {
                insts.push(reduce(f, rows, input, out, true));
                insts.push(reduce(f, rows, input, out, false));
                insts.push(reduce(f, rows, acc_dtype(f, out), out, true));
            }
        }
        insts.sort_by(|a, b| a.name.cmp(&b.name));
        insts.dedup_by(|a, b| a.name == b.name);
        let Some(lib) = build("reduce", &insts) else { return };
        for &(f, dtype, out) in &cases {
            for shape in [vec![3, 1000], vec![2, 45], vec![4, 37, 5], vec![1, 300, 2]] {
                let n: usize = shape.iter().product();
                let data: Vec<f64> = (0..n)
                    .map(|i| match dtype {
                        // Sums past i32's range wrap.
                        DType::I32 => [2_000_000_000.0, -7.0, 1_500_000_000.0, 3.0][i % 4],
                        // Sums past i64's range wrap; maxima and minima see the same values.
                        DType::I64 => (((i * 7919) % 1013) as f64 - 500.0) * 4.0e15,
                        // Products near 1 stay finite.
                        _ if f == ReduceOp::Prod => 1.0 + ((i * 13) % 7) as f64 * 0.001,
                        _ if i == 77 => f64::NAN,
                        _ => ((i * 7919) % 1013) as f64 / 101.0 - 5.0,
                    })
                    .collect();
                let x = host(dtype, &shape, &data);
                let mut out_shape = shape.clone();
                out_shape.remove(1);
                let meta = Meta::new(out, Shape::new(&out_shape));
                let want = bytes(&cpu().reduce(f, &x, &[1], &meta).expect("cpu reduce"));
                let mut scale: f64 = data.iter().filter(|v| v.is_finite()).map(|v| v.abs()).sum::<f64>().max(1.0);
                if f == ReduceOp::Mean {
                    scale /= shape[1] as f64;
                }
                let tol = match (f, out) {
                    (ReduceOp::Max | ReduceOp::Min, _) | (_, DType::I32 | DType::I64) => 0.0,
                    (_, DType::F32) => 1e-6,
                    _ => 1e-14,
                };
                for parts in [1, 3] {
                    let got = run_reduce(&lib, f, &x, parts, out);
                    agree(&format!("{f:?} of {dtype}{shape:?} in {parts} part(s)"), out, &got, &want, tol, scale);
                }
            }
        }
    }

    /// Softmax and log-softmax, one block a row with block-wide shuffle
    /// reductions, rows shorter and longer than the block; arg reductions
    /// and scans, a thread a column: the CPU's values.
    #[test]
    fn softmax_arg_reductions_and_scans_match_the_cpu() {
        let mut insts = Vec::new();
        for d in [DType::F32, DType::F64] {
            insts.extend([softmax(d, false), softmax(d, true), scan(ScanOp::Cumsum, d), scan(ScanOp::Cumprod, d)]);
            insts.extend([arg_reduce(ArgOp::ArgMax, d, DType::I64), arg_reduce(ArgOp::ArgMin, d, DType::I32)]);
        }
        let Some(lib) = build("rows", &insts) else { return };
        for d in [DType::F32, DType::F64] {
            for (rows, len) in [(3usize, 1000usize), (4, 7), (2, 257)] {
                let data: Vec<f64> = (0..rows * len)
                    .map(|i| match i {
                        5 => f64::NEG_INFINITY,
                        _ => ((i * 7919) % 1013) as f64 / 50.0 - 10.0,
                    })
                    .collect();
                let x = host(d, &[rows, len], &data);
                for log in [false, true] {
                    let op =
                        if log { crate::op::Op::LogSoftmax { axis: 1 } } else { crate::op::Op::Softmax { axis: 1 } };
                    let want = crate::backend::execute_on(
                        crate::tensor::Device::CPU,
                        &op,
                        &[&x],
                        &crate::backend::KernelCtx::EAGER,
                    )
                    .expect("cpu softmax");
                    let (xs, mut got) = (bytes(&x), vec![0u8; rows * len * d.size()]);
                    // SAFETY: the launcher's signature; `got` holds the output.
                    unsafe {
                        let f = std::mem::transmute::<*mut c_void, SoftmaxLauncher>(launcher(&lib, &softmax(d, log)));
                        f(rows as u32, 1, 256, xs.as_ptr() as u64, got.as_mut_ptr() as u64, len as i64);
                    }
                    let tol = if d == DType::F32 { 1e-5 } else { 1e-12 };
                    // Log-softmax values reach tens; softmax values are at most 1.
                    let scale = if log { 100.0 } else { 1.0 };
                    agree(&format!("log {log} softmax of {d}[{rows}, {len}]"), d, &got, &bytes(&want[0]), tol, scale);
                }
            }
            // Along the middle axis of [3, 5, 4]: arg reductions (NaN
            // skipped, first of ties) and scans both ways.
            let data: Vec<f64> = (0..60)
                .map(|i| match i {
                    9 | 30 => f64::NAN,
                    _ => ((i * 37) % 11) as f64 * 0.25 - 1.0,
                })
                .collect();
            let x = host(d, &[3, 5, 4], &data);
            let xs = bytes(&x);
            let (outer, r, inner) = (3i64, 5i64, 4i64);
            for (f, index) in [(ArgOp::ArgMax, DType::I64), (ArgOp::ArgMin, DType::I32)] {
                let meta = Meta::new(index, Shape::new(&[3, 4]));
                let want = bytes(&cpu().arg_reduce(f, &x, 1, &meta).expect("cpu arg"));
                let mut got = vec![0u8; 12 * index.size()];
                // SAFETY: the launcher's signature; `got` holds the output.
                unsafe {
                    let k = std::mem::transmute::<*mut c_void, AlongLauncher>(launcher(&lib, &arg_reduce(f, d, index)));
                    k(1, 1, 256, xs.as_ptr() as u64, got.as_mut_ptr() as u64, outer, r, inner);
                }
                assert_eq!(got, want, "{f:?} of {d}");
            }
            for f in [ScanOp::Cumsum, ScanOp::Cumprod] {
                for (exclusive, reverse) in [(false, false), (true, false), (false, true), (true, true)] {
                    let meta = meta(&x);
                    let want = bytes(&cpu().scan(f, &x, 1, exclusive, reverse, &meta).expect("cpu scan"));
                    let mut got = vec![0u8; 60 * d.size()];
                    // SAFETY: the launcher's signature; `got` holds the output.
                    unsafe {
                        let k = std::mem::transmute::<*mut c_void, ScanLauncher>(launcher(&lib, &scan(f, d)));
                        let (src, dst) = (xs.as_ptr() as u64, got.as_mut_ptr() as u64);
                        k(1, 1, 256, src, dst, outer, r, inner, exclusive as i32, reverse as i32);
                    }
                    agree(&format!("{f:?} of {d}, exclusive {exclusive}, reverse {reverse}"), d, &got, &want, 0.0, 1.0);
                }
            }
        }
    }

    /// The random kernel draws the CPU's numbers, its stream given by value
    /// or read from memory (as a recorded graph's replays read it), and its
    /// seed mixed with an offset read from memory.
    #[test]
    fn random_kernel_reads_its_stream_and_seed_offset_from_memory_and_draws_the_cpus_numbers() {
        use crate::op::creation::{Distribution, RandomStream};
        let insts = [random(DType::F32), random(DType::F64), random(DType::I64)];
        let Some(lib) = build("random", &insts) else { return };
        let cases = [
            (DType::F32, Distribution::Uniform { low: -1.0, high: 2.0 }),
            (DType::F64, Distribution::Uniform { low: 0.0, high: 1.0 }),
            (DType::I64, Distribution::UniformInt { low: -5, high: 1000 }),
        ];
        for ((inst, (dtype, dist)), stream) in insts.iter().zip(cases).zip([5u64, 0x1_0000_0003, 77]) {
            let out = Meta::new(dtype, Shape::new(&[37]));
            let want = bytes(&cpu().random(&dist, &out, 42, stream).expect("cpu"));
            let p = RandomParams::new(&dist, &out, 42, stream).expect("the kernel draws it");
            let blocks = 37usize.div_ceil(RandomStream::per_block(dtype, &dist)) as u32;
            // SAFETY: the launcher's signature.
            let f = unsafe { std::mem::transmute::<*mut c_void, RandomLauncher>(launcher(&lib, inst)) };
            let word = stream;
            for by_address in [false, true] {
                let mut got = vec![0u8; 37 * dtype.size()];
                let p = RandomParams {
                    out: got.as_mut_ptr() as u64,
                    stream: if by_address { 0 } else { stream },
                    stream_at: if by_address { &word as *const u64 as u64 } else { 0 },
                    ..p
                };
                // SAFETY: `got` holds the 37 elements; `word` outlives the call.
                unsafe { f(blocks.min(3), 1, 32, p) };
                assert_eq!(got, want, "{dtype} {dist:?}, stream read from memory: {by_address}");
            }
            // Seeded by an offset read from memory (Dropout's step counter,
            // past 2^53 and negative too): the CPU's numbers for the seed
            // `offset_seed` makes, from stream 0.
            for offset in [0i64, -3, 0x2545_F491_4F6C_DD1D] {
                let seed = crate::op::creation::offset_seed(42, offset);
                let want = bytes(&cpu().random(&dist, &out, seed, 0).expect("cpu"));
                let mut got = vec![0u8; 37 * dtype.size()];
                let p = RandomParams {
                    out: got.as_mut_ptr() as u64,
                    stream: 0,
                    seed_at: &offset as *const i64 as u64,
                    ..RandomParams::new(&dist, &out, 42, 0).expect("the kernel draws it")
                };
                // SAFETY: `got` holds the 37 elements; `offset` outlives the call.
                unsafe { f(blocks.min(3), 1, 32, p) };
                assert_eq!(got, want, "{dtype} {dist:?}, seeded by the offset {offset}");
            }
        }
    }

    pub(crate) fn meta(v: &Value) -> Meta {
        Meta::new(v.dtype, v.shape().clone())
    }

    pub(crate) fn cpu() -> &'static dyn Backend {
        crate::backend::backend(crate::tensor::Device::CPU).expect("cpu")
    }

    pub(crate) fn bytes(v: &Value) -> Vec<u8> {
        let size = v.dtype.size();
        let at = v.layout.offset * size;
        v.storage.host().bytes()[at..at + v.numel() * size].to_vec()
    }

    /// gather_nd, then scatter_nd, on the emulated GPU: `(bytes, error word)`.
    fn run_nd(
        lib: &HostLibrary,
        inst: &Instance,
        src: &Value,
        idx: &Value,
        shape: &Shape,
        out: &Meta,
    ) -> (Vec<u8>, i32) {
        let mut p = GatherNdParams::new(shape, idx.shape(), idx.dtype, src.dtype.size()).expect("geometry");
        let mut result = vec![0u8; out.shape.numel_known() * out.dtype.size()];
        let mut error = 0i32;
        let (s, i) = (bytes(src), bytes(idx));
        (p.src, p.idx, p.out, p.error) =
            (s.as_ptr() as u64, i.as_ptr() as u64, result.as_mut_ptr() as u64, &mut error as *mut i32 as u64);
        // SAFETY: the launcher's signature; every pointer is live and sized
        // by the geometry.
        unsafe {
            let f = std::mem::transmute::<*mut c_void, NdLauncher>(launcher(lib, inst));
            f(3, 1, 32, p);
        }
        (result, error)
    }

    #[test]
    fn gather_nd_and_scatter_nd_kernels_match_the_cpu() {
        let insts = [gather_nd(4), gather_nd(8), scatter_nd(DType::F32), scatter_nd(DType::I64)];
        let Some(lib) = build("nd", &insts) else { return };
        let params_data: Vec<f64> = (0..60).map(|v| v as f64 * 0.5 - 7.0).collect();
        let params = host(DType::F32, &[4, 3, 5], &params_data);
        for (idx_dtype, idx_shape, idx_data) in [
            (DType::I32, vec![2, 2, 2], vec![1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 2.0, 1.0]),
            (DType::I64, vec![3, 1], vec![3.0, 0.0, 3.0]),
            (DType::I32, vec![2, 3], vec![3.0, 2.0, 4.0, 0.0, 1.0, 2.0]),
            (DType::I64, vec![2, 0], vec![]),
        ] {
            let idx = host(idx_dtype, &idx_shape, &idx_data);
            let out = crate::op::Op::GatherNd.infer(&[meta(&params), meta(&idx)]).expect("infer")[0].clone();
            let want = cpu().gather_nd(&params, &idx, &out).expect("cpu gather_nd");
            let (got, error) = run_nd(&lib, &insts[0], &params, &idx, params.shape(), &out);
            assert_eq!(error, 0);
            assert_eq!(got, bytes(&want), "gather_nd by {idx_shape:?}");
            // Its transpose: the gathered values scattered back, duplicates summed.
            let upd = want;
            let op = crate::op::Op::ScatterNd { shape: params.shape().clone() };
            let scattered = op.infer(&[meta(&idx), meta(&upd)]).expect("infer")[0].clone();
            let want = cpu().scatter_nd(&idx, &upd, &scattered).expect("cpu scatter_nd");
            let (got, error) = run_nd(&lib, &insts[2], &upd, &idx, params.shape(), &scattered);
            assert_eq!(error, 0);
            assert_eq!(got, bytes(&want), "scatter_nd by {idx_shape:?}");
        }
        // int64 sums wrap as on the CPU; 8-byte gathers.
        let big = host(DType::I64, &[2, 2], &[-3.0, 9.0e15, 4.0, -1.0]);
        let idx = host(DType::I32, &[3, 1], &[1.0, 0.0, 1.0]);
        let out = crate::op::Op::GatherNd.infer(&[meta(&big), meta(&idx)]).expect("infer")[0].clone();
        let (got, _) = run_nd(&lib, &insts[1], &big, &idx, big.shape(), &out);
        assert_eq!(got, bytes(&cpu().gather_nd(&big, &idx, &out).expect("cpu")));
        let upd = host(DType::I64, &[3, 2], &[i64::MAX as f64, 5.0, 7.0, -2.0, 1.0, 3.0]);
        let wide = Meta::new(DType::I64, Shape::new(&[2, 2]));
        let (got, _) = run_nd(&lib, &insts[3], &upd, &idx, &wide.shape, &wide);
        assert_eq!(got, bytes(&cpu().scatter_nd(&idx, &upd, &wide).expect("cpu")));
        // An index out of range: error word 3, zeros where it pointed (the
        // launcher turns the word into the error).
        let bad = host(DType::I32, &[2, 2], &[1.0, 2.0, 4.0, 0.0]);
        let out = crate::op::Op::GatherNd.infer(&[meta(&params), meta(&bad)]).expect("infer")[0].clone();
        let (got, error) = run_nd(&lib, &insts[0], &params, &bad, params.shape(), &out);
        assert_eq!(error, 3);
        assert!(got[20..].iter().all(|&b| b == 0), "the bad vector's row is zeros");
        // The first vector, (1, 2), is row 1 * 3 + 2 = 5 of five floats.
        assert_eq!(&got[..20], &bytes(&params)[100..120]);
        let upd = host(DType::F32, &[2, 5], &[1.0; 10]);
        let (_, error) = run_nd(&lib, &insts[2], &upd, &bad, params.shape(), &meta(&params));
        assert_eq!(error, 3);
    }

    /// The top-k passes of [`top_k_passes`] on the emulated GPU, as the
    /// CUDA backend launches them.
    fn run_top_k(lib: &HostLibrary, inst: &Instance, x: &Value, k: usize, index: DType) -> (Vec<u8>, Vec<u8>) {
        let n = *x.shape().last().expect("rank");
        let rows = x.numel() / n;
        let xs = bytes(x);
        let mut vals = vec![0u8; rows * k * x.dtype.size()];
        let mut idx = vec![0u8; rows * k * index.size()];
        let mut cand: Option<Vec<i32>> = None;
        // SAFETY: the launcher's signature.
        let f = unsafe { std::mem::transmute::<*mut c_void, TopKLauncher>(launcher(lib, inst)) };
        for (m, chunks) in top_k_passes(n, k).expect("a kernel plan") {
            let mut next = (chunks > 1).then(|| vec![-7i32; rows * chunks * k]);
            let (vp, ip) = match next {
                None => (vals.as_mut_ptr() as u64, idx.as_mut_ptr() as u64),
                Some(_) => (0, 0),
            };
            let np = next.as_mut().map_or(0, |v| v.as_mut_ptr() as u64);
            let cp = cand.as_ref().map_or(0, |c| c.as_ptr() as u64);
            // SAFETY: every pointer is live and sized for the pass.
            unsafe {
                f(rows as u32, chunks as u32, 64, xs.as_ptr() as u64, cp, n as i64, m as i64, k as i32, vp, ip, np)
            };
            if let Some(next) = &next {
                assert!(next.iter().all(|&c| c >= -1 && c < n as i32), "candidates are positions or -1");
            }
            cand = next;
        }
        (vals, idx)
    }

    #[test]
    fn top_k_kernel_matches_the_cpu_in_one_pass_and_several() {
        let mut insts = Vec::new();
        for d in [DType::F32, DType::F64, DType::F16, DType::I64, DType::U8] {
            insts.push(top_k(d, DType::I32));
        }
        insts.push(top_k(DType::F32, DType::I64));
        let Some(lib) = build("topk", &insts) else { return };
        // NaN first, -0 equal to +0 (ties by position), infinities, repeats.
        let special =
            [1.0, f64::NAN, -0.0, 0.0, f64::INFINITY, 3.0, -f64::INFINITY, 3.0, f64::NAN, -2.5, 0.0, -0.0, 7.0];
        let mut cases: Vec<(Vec<usize>, Vec<f64>, usize)> = vec![
            (vec![2, 13], special.iter().chain(special.iter().rev()).copied().collect(), 13),
            (vec![2, 13], special.iter().chain(special.iter().rev()).copied().collect(), 5),
            (vec![1, 1], vec![4.0], 1),
        ];
        // Long rows: several passes (5000 is three chunks of 2048), repeated values.
        let long: Vec<f64> = (0..3 * 5000).map(|i| ((i * 7919) % 1013) as f64 - 500.0).collect();
        cases.push((vec![3, 5000], long.clone(), 9));
        cases.push((vec![1, 2049], long[..2049].to_vec(), 1024));
        cases.push((vec![2, 2048], long[..4096].to_vec(), 2048));
        for (shape, data, k) in &cases {
            for (i, inst) in insts.iter().enumerate() {
                let (dtype, index) = match i {
                    0 => (DType::F32, DType::I32),
                    1 => (DType::F64, DType::I32),
                    2 => (DType::F16, DType::I32),
                    3 => (DType::I64, DType::I32),
                    4 => (DType::U8, DType::I32),
                    _ => (DType::F32, DType::I64),
                };
                if !dtype.is_float() && data.iter().any(|v| !v.is_finite()) {
                    continue;
                }
                let data: Vec<f64> =
                    if dtype == DType::U8 { data.iter().map(|v| v.rem_euclid(256.0)).collect() } else { data.clone() };
                let x = host(dtype, shape, &data);
                let outs = crate::op::Op::TopK { k: *k, sorted: true }.infer(&[meta(&x)]).expect("infer");
                let (want_v, want_i) = cpu().top_k(&x, *k, &outs).expect("cpu top_k");
                let (got_v, got_i) = run_top_k(&lib, inst, &x, *k, index);
                let what = format!("top_k({k}) of {dtype}{shape:?}");
                assert_eq!(got_v, bytes(&want_v), "{what}: values");
                let got_i: Vec<i64> = match index {
                    DType::I32 => got_i.chunks(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64).collect(),
                    _ => got_i.chunks(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect(),
                };
                let want_i: Vec<i64> =
                    bytes(&want_i).chunks(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64).collect();
                assert_eq!(got_i, want_i, "{what}: indices");
            }
        }
        // What the kernel leaves to the host: k above half a chunk on long rows.
        assert_eq!(top_k_passes(5000, 1025), None);
        assert_eq!(top_k_passes(2048, 2048), Some(vec![(2048, 1)]));
        assert_eq!(top_k_passes(5000, 9), Some(vec![(5000, 3), (27, 1)]));
    }
}

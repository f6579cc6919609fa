/* The per-tensor statistics of the one heavy loop, in one fused pass each: central moments of a float32
 * tensor as stored and rounded to fp16 and bf16, whether it is finite, its absolute maximum, and how many
 * of its values are exactly zero (the mark of a pruned copy: reductions.is_sparse).
 *
 * Why C: numpy spends about 30 ns an element on this (a float64 copy, a centred copy, powers, and the
 * fp16 cast, which numpy does in software), where reading the bytes from the page cache costs 0.2 ns.
 * Here each element is loaded once per pass and every statistic stays in registers.
 *
 * One pass, shifted: the powers of x - K are summed, K the mean of the first block (at each precision),
 * and turned into central moments at the end. Raw power sums lose digits to cancellation as the mean
 * grows against the spread; about K, whose distance d to the mean is a small multiple of the spread
 * for weights, the moments lose about (1 + (d / std)^4) float64 roundings: as exact as two passes (the
 * tests hold them to 1e-10 of numpy's two-pass moments), at half the memory traffic.
 *
 * Determinism: the tensor is cut into fixed blocks of BLOCK elements, each block is summed in LANES
 * fixed lanes, and the block sums are added in block order, so the result is the same bits whatever the
 * number of threads (threads only decide who sums which block); K depends only on the values.
 *
 * Rounding is to nearest, ties to even, as numpy's astype(float16) after clipping to +-65504, and as
 * reductions.rounded's bit trick for bf16: tests/features/test_moments_kernel.py checks both bit for bit.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define BLOCK 16384
#define LANES 8
#define PRECISIONS 3 /* F32 (as stored), F16, BF16: reductions.PRECISIONS */
#define MAX_THREADS 64

/* AVX2 where the CPU has it, SSE2 elsewhere, chosen at load time; the lanes are fixed in the code, so
 * both give the same bits (and -ffp-contract=off keeps multiply-adds unfused). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif

static inline uint32_t bits_of(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

static inline float float_of(uint32_t b) {
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

/* `when ? a : b` as bit masks: a select the vectoriser always takes (it may keep a ternary a branch). */
static inline uint32_t pick(int when, uint32_t a, uint32_t b) {
    uint32_t mask = 0u - (uint32_t)(when != 0);
    return (a & mask) | (b & ~mask);
}

/* fp16 rounding, back in float32. The fp16 quantum at x is 2^(max(e, -14) - 10) for x's binary exponent
 * e; scaling by its inverse is exact, adding and taking away 1.5 * 2^23 rounds to an integer (to nearest
 * even, the default mode; |y| <= 2^11 here), and scaling back is exact. Magnitudes are clipped to 65504
 * first, as reductions.rounded does; NaN stays NaN. Integer selects only, so that loops over it
 * vectorise (a float ternary is a branch where NaN may appear). */
static inline float round_f16(float x) {
    const float magic = 12582912.0f;
    uint32_t b = bits_of(x);
    uint32_t sign = b & 0x80000000u, mag = b & 0x7FFFFFFFu;
    uint32_t clipped = pick(mag < 0x477FE000u, mag, 0x477FE000u);      /* 65504 */
    uint32_t floor = pick(clipped > 0x38800000u, clipped, 0x38800000u); /* 2^-14: least normal */
    uint32_t biased = floor >> 23;                                 /* e + 127 */
    float up = float_of((264u - biased) << 23);                    /* 2^(10 - e) */
    float down = float_of((biased - 10u) << 23);                   /* 2^(e - 10) */
    float y = float_of(clipped) * up;
    float r = ((y + magic) - magic) * down;
    uint32_t rounded = bits_of(r) | sign;
    return float_of(pick(mag > 0x7F800000u, b, rounded));
}

/* bf16 rounding: the upper 16 bits, to nearest even (reductions.rounded's bit trick, unclipped). */
static inline float round_bf16(float x) {
    uint32_t b = bits_of(x);
    b = (b + (((b >> 16) & 1u) + 0x7FFFu)) & 0xFFFF0000u;
    return float_of(b);
}

typedef struct {
    const float *values;
    Py_ssize_t size;
    int which[PRECISIONS]; /* which precisions are asked for */
    double shifts[PRECISIONS]; /* K: the first block's mean at each precision */
    double *partial;           /* per block and precision: the sums of (v - K)^1..4 */
    int *nonfinite;
    float *absmax;
    Py_ssize_t *zeros;
    Py_ssize_t blocks;
    int threads;
} Job;

typedef struct {
    Job *job;
    int index;
} Worker;

#define SUMS 4 /* the sums of (v - K)^k, k = 1..4 */

/* Four float64 lanes, and eight uint32: GCC vectors, so that the AVX2 clone keeps each in a register
 * and the default one (SSE2 halves) computes the very same lanes to the same bits. Written as plain
 * loops over arrays, GCC vectorised the float32 sums poorly (1.1 ms for 1.5M values; these: 0.4). */
typedef double lanes_t __attribute__((vector_size(4 * sizeof(double))));
typedef uint32_t bits_t __attribute__((vector_size(LANES * sizeof(uint32_t))));

/* The sums of the first four powers of (v - K) over one block of float32 values: LANES fixed lanes
 * (value i in lane i % LANES, two vectors of four), then the lanes added in order. A rounded precision
 * is rounded into a block of its own first (round_block), so that one loop serves all three. */
CLONES static void shifted_sums(const float *v, Py_ssize_t n, double shift, double *out) {
    const lanes_t k = {shift, shift, shift, shift};
    lanes_t s1[2] = {{0}}, s2[2] = {{0}}, s3[2] = {{0}}, s4[2] = {{0}};
    Py_ssize_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        for (int h = 0; h < 2; h++) {
            const float *f = v + i + 4 * h;
            lanes_t d = {(double)f[0], (double)f[1], (double)f[2], (double)f[3]};
            d -= k;
            lanes_t d2 = d * d;
            s1[h] += d;
            s2[h] += d2;
            s3[h] += d2 * d;
            s4[h] += d2 * d2;
        }
    }
    double t1[LANES], t2[LANES], t3[LANES], t4[LANES];
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 4; l++) {
            t1[4 * h + l] = s1[h][l];
            t2[4 * h + l] = s2[h][l];
            t3[4 * h + l] = s3[h][l];
            t4[4 * h + l] = s4[h][l];
        }
    for (; i < n; i++) {
        double d = (double)v[i] - shift;
        double d2 = d * d;
        t1[0] += d;
        t2[0] += d2;
        t3[0] += d2 * d;
        t4[0] += d2 * d2;
    }
    out[0] = out[1] = out[2] = out[3] = 0.0;
    for (int l = 0; l < LANES; l++) {
        out[0] += t1[l];
        out[1] += t2[l];
        out[2] += t3[l];
        out[3] += t4[l];
    }
}

/* The plain sum of a block, what K is made of: the first of shifted_sums about 0 (x - 0 is x). */
static double plain_sum(const float *v, Py_ssize_t n) {
    double sums[SUMS];
    shifted_sums(v, n, 0.0, sums);
    return sums[0];
}

CLONES static void round_block_f16(const float *v, Py_ssize_t n, float *out) {
    for (Py_ssize_t i = 0; i < n; i++) out[i] = round_f16(v[i]);
}

CLONES static void round_block_bf16(const float *v, Py_ssize_t n, float *out) {
    for (Py_ssize_t i = 0; i < n; i++) out[i] = round_bf16(v[i]);
}

/* The largest |x| of a block, whether any x is NaN or infinite (all exponent bits set), and how many
 * are +0 or -0. */
CLONES static float block_absmax(const float *v, Py_ssize_t n, int *nonfinite, Py_ssize_t *zeros) {
    const bits_t magnitude = (bits_t){0} + 0x7FFFFFFFu, exponent = (bits_t){0} + 0x7F800000u;
    bits_t top = {0}, bad = {0}, zero = {0}; /* a block has < 2^32 values */
    Py_ssize_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        bits_t b;
        memcpy(&b, v + i, sizeof b);
        b &= magnitude; /* |x|: finite ones order as their bits */
        bits_t above = (bits_t)(b > top);
        top = (b & above) | (top & ~above);
        bad |= (bits_t)((b & exponent) == exponent);
        zero -= (bits_t)(b == 0u); /* a true comparison is all ones: -1 */
    }
    uint32_t best = 0, any = 0;
    Py_ssize_t count = 0;
    for (int k = 0; k < LANES; k++) {
        best = top[k] > best ? top[k] : best;
        any |= bad[k];
        count += zero[k];
    }
    for (; i < n; i++) {
        uint32_t b = bits_of(v[i]) & 0x7FFFFFFFu;
        best = b > best ? b : best;
        any |= (b & 0x7F800000u) == 0x7F800000u;
        count += b == 0u;
    }
    *nonfinite = any != 0;
    *zeros = count;
    return float_of(best);
}

static Py_ssize_t block_size(const Job *job, Py_ssize_t block) {
    Py_ssize_t left = job->size - block * BLOCK;
    return left < BLOCK ? left : BLOCK;
}

static void sum_block(Job *job, Py_ssize_t block) {
    const float *v = job->values + block * BLOCK;
    Py_ssize_t n = block_size(job, block);
    double *out = job->partial + block * PRECISIONS * SUMS;
    float rounded[BLOCK];
    job->absmax[block] = block_absmax(v, n, &job->nonfinite[block], &job->zeros[block]);
    if (job->which[0]) shifted_sums(v, n, job->shifts[0], out);
    if (job->which[1]) {
        round_block_f16(v, n, rounded);
        shifted_sums(rounded, n, job->shifts[1], out + SUMS);
    }
    if (job->which[2]) {
        round_block_bf16(v, n, rounded);
        shifted_sums(rounded, n, job->shifts[2], out + 2 * SUMS);
    }
}

static void *run_worker(void *arg) {
    Worker *w = (Worker *)arg;
    Job *job = w->job;
    /* Blocks are dealt round-robin: which thread sums a block never changes what is summed. */
    for (Py_ssize_t block = w->index; block < job->blocks; block += job->threads) sum_block(job, block);
    return NULL;
}

static void run_blocks(Job *job) {
    pthread_t ids[MAX_THREADS];
    Worker workers[MAX_THREADS];
    int started = 0;
    for (int t = 1; t < job->threads; t++) {
        workers[t].job = job;
        workers[t].index = t;
        if (pthread_create(&ids[t], NULL, run_worker, &workers[t]) != 0) break;
        started = t;
    }
    job->threads = started + 1; /* fewer threads than asked: the same blocks, the same sums */
    workers[0].job = job;
    workers[0].index = 0;
    run_worker(&workers[0]);
    for (int t = 1; t <= started; t++) pthread_join(ids[t], NULL);
}

/* moments(values, out, which, threads) -> (finite, absmax, zeros)
 *
 * values: a C-contiguous float32 buffer. out: a writable C-contiguous float64 buffer of 12 values,
 * (3, 4): [mean, m2, m3, m4] at F32, F16, BF16; rows not asked for are left as they are. which: bit p set
 * asks for precision p. The moments are population moments (divided by the size); an empty tensor gives
 * zeros. */
static PyObject *moments(PyObject *self, PyObject *args) {
    PyObject *values_obj, *out_obj;
    int which_mask, threads;
    if (!PyArg_ParseTuple(args, "OOii", &values_obj, &out_obj, &which_mask, &threads)) return NULL;
    Py_buffer values, out;
    if (PyObject_GetBuffer(values_obj, &values, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (values.itemsize != 4 || values.format == NULL || strcmp(values.format, "f") != 0) {
        PyBuffer_Release(&values);
        PyErr_SetString(PyExc_TypeError, "moments: values must be a contiguous float32 buffer");
        return NULL;
    }
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&values);
        return NULL;
    }
    if (out.itemsize != 8 || out.len != (Py_ssize_t)(PRECISIONS * 4 * sizeof(double)) ||
        strcmp(out.format, "d") != 0) {
        PyBuffer_Release(&values);
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_TypeError, "moments: out must be a contiguous float64 buffer of 12 values");
        return NULL;
    }
    Job job;
    memset(&job, 0, sizeof job);
    job.values = (const float *)values.buf;
    job.size = values.len / 4;
    for (int p = 0; p < PRECISIONS; p++) job.which[p] = (which_mask >> p) & 1;
    job.blocks = (job.size + BLOCK - 1) / BLOCK;
    job.threads = threads < 1 ? 1 : (threads > MAX_THREADS ? MAX_THREADS : threads);
    if (job.threads > job.blocks) job.threads = job.blocks > 0 ? (int)job.blocks : 1;
    Py_ssize_t slots = job.blocks > 0 ? job.blocks : 1;
    job.partial = PyMem_RawCalloc((size_t)slots * PRECISIONS * SUMS, sizeof(double));
    job.nonfinite = PyMem_RawCalloc((size_t)slots, sizeof(int));
    job.absmax = PyMem_RawCalloc((size_t)slots, sizeof(float));
    job.zeros = PyMem_RawCalloc((size_t)slots, sizeof(Py_ssize_t));
    if (!job.partial || !job.nonfinite || !job.absmax || !job.zeros) {
        PyMem_RawFree(job.partial);
        PyMem_RawFree(job.nonfinite);
        PyMem_RawFree(job.absmax);
        PyMem_RawFree(job.zeros);
        PyBuffer_Release(&values);
        PyBuffer_Release(&out);
        return PyErr_NoMemory();
    }
    double *result = (double *)out.buf;
    int finite = 1;
    float top = 0.0f;
    Py_ssize_t zeros = 0;
    Py_BEGIN_ALLOW_THREADS;
    if (job.size > 0) {
        Py_ssize_t first = block_size(&job, 0);
        job.shifts[0] = plain_sum(job.values, first) / (double)first;
        float rounded[BLOCK];
        if (job.which[1]) {
            round_block_f16(job.values, first, rounded);
            job.shifts[1] = plain_sum(rounded, first) / (double)first;
        }
        if (job.which[2]) {
            round_block_bf16(job.values, first, rounded);
            job.shifts[2] = plain_sum(rounded, first) / (double)first;
        }
    }
    run_blocks(&job);
    for (Py_ssize_t b = 0; b < job.blocks; b++) {
        finite &= !job.nonfinite[b];
        top = job.absmax[b] > top ? job.absmax[b] : top;
        zeros += job.zeros[b];
    }
    for (int p = 0; p < PRECISIONS; p++) {
        if (!job.which[p]) continue;
        double s[SUMS] = {0};
        for (Py_ssize_t b = 0; b < job.blocks; b++)
            for (int k = 0; k < SUMS; k++) s[k] += job.partial[(b * PRECISIONS + p) * SUMS + k];
        double n = job.size > 0 ? (double)job.size : 1.0;
        /* Moments about K, then about the mean K + d: the binomial expansions of (x - K - d)^k. */
        double d = s[0] / n, a2 = s[1] / n, a3 = s[2] / n, a4 = s[3] / n;
        result[p * 4] = job.shifts[p] + d;
        result[p * 4 + 1] = a2 - d * d;
        result[p * 4 + 2] = a3 - 3.0 * d * a2 + 2.0 * d * d * d;
        result[p * 4 + 3] = a4 - 4.0 * d * a3 + 6.0 * d * d * a2 - 3.0 * d * d * d * d;
    }
    Py_END_ALLOW_THREADS;
    PyMem_RawFree(job.partial);
    PyMem_RawFree(job.nonfinite);
    PyMem_RawFree(job.absmax);
    PyMem_RawFree(job.zeros);
    PyBuffer_Release(&values);
    PyBuffer_Release(&out);
    return Py_BuildValue("(Odn)", finite ? Py_True : Py_False, (double)top, zeros);
}

/* round_f16(values, out): out[i] = values[i] rounded to fp16 (clipped to +-65504), in float32. */
static PyObject *round_f16_into(PyObject *self, PyObject *args) {
    PyObject *values_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OO", &values_obj, &out_obj)) return NULL;
    Py_buffer values, out;
    if (PyObject_GetBuffer(values_obj, &values, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&values);
        return NULL;
    }
    if (strcmp(values.format, "f") != 0 || strcmp(out.format, "f") != 0 || values.len != out.len) {
        PyBuffer_Release(&values);
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_TypeError, "round_f16: values and out must be float32 buffers of one size");
        return NULL;
    }
    const float *v = (const float *)values.buf;
    float *o = (float *)out.buf;
    Py_ssize_t n = values.len / 4;
    Py_BEGIN_ALLOW_THREADS;
    round_block_f16(v, n, o);
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&values);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"moments", moments, METH_VARARGS,
     "moments(values, out, which, threads) -> (finite, absmax, zeros): central moments at each precision asked."},
    {"round_f16", round_f16_into, METH_VARARGS, "round_f16(values, out): float32 values rounded to fp16."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_moments", NULL, -1, methods};

PyMODINIT_FUNC PyInit__moments(void) { return PyModule_Create(&module); }

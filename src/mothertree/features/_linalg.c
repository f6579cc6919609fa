/* The feature loop's small linear algebra on float32 stacks, with the GIL released throughout:
 *
 * - centred_gram: reductions.pairwise_squared_distances's G = (X - mean) (X - mean)^T over a few models,
 *   the mean over the models of each column;
 * - count_sketch: rank.sketched_ranks's S W T^T of every model's matrix W, for the sparse sign sketches
 *   S and T (rank.make_sketch, as CSR arrays).
 *
 * centred_gram.
 * Why C: numpy makes a float64 copy of each chunk, centres it in another pass and hands BLAS a product
 * of a few rows by tens of thousands of columns, a shape BLAS does slowly; and two threads comparing two
 * tensors at once took as long as one (the copies' page faults and BLAS's skinny kernels do not run side
 * by side). Here a block of columns is centred into a float64 buffer that stays in L1, every pair's
 * products are summed from it (each row against up to 8 others at once: row_dots), and the GIL is
 * released throughout.
 *
 * Its exactness: as numpy's path, the column means are float64 sums of the rows in order, divided by the
 * number of rows, and the centred values are float64; the products are summed in 4 fixed lanes per
 * block and the blocks added in order, so the result is the same bits on every run and every CPU
 * (-ffp-contract=off keeps multiply-adds unfused, as in _moments.c). The same ~1e-12 relative error
 * as numpy's float64 products, not its bits.
 *
 * count_sketch. scipy's sparse products took 0.5 ms a model for a 384 x 384 matrix, most of it dispatch,
 * holding the GIL. The sums are the same as theirs, bit for bit: each sketch entry adds its signed
 * entries in the CSR order, starting from zero, in float64 (a sign times a float32 value is exact).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define COLUMNS 256 /* one block: COLUMNS x rows float64, in L1 for the few models this is used for */

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif

/* The columns [start, start + width) of x (rows x stride float32), minus each column's mean. */
CLONES static void centre_block(const float *x, Py_ssize_t rows, Py_ssize_t stride, Py_ssize_t start,
                                Py_ssize_t width, double *mean, double *centred) {
    for (Py_ssize_t c = 0; c < width; c++) mean[c] = (double)x[start + c];
    for (Py_ssize_t i = 1; i < rows; i++)
        for (Py_ssize_t c = 0; c < width; c++) mean[c] += (double)x[i * stride + start + c];
    for (Py_ssize_t c = 0; c < width; c++) mean[c] /= (double)rows;
    for (Py_ssize_t i = 0; i < rows; i++)
        for (Py_ssize_t c = 0; c < width; c++)
            centred[i * COLUMNS + c] = (double)x[i * stride + start + c] - mean[c];
}

/* Four float64 lanes: a GCC vector, so that the AVX2 clone keeps each in a register and the default
 * one (two SSE2 halves) sums the very same lanes, unfused, to the same bits. */
typedef double lanes_t __attribute__((vector_size(4 * sizeof(double))));
#define ROW_GROUP 8 /* the dots of one row taken at once: its lanes and 8 sums stay in registers */

/* out[s] += the dot of row a with row b + s * COLUMNS, for s < S, over the first width4 columns (a
 * multiple of 4; the padding columns are zeros). Row a is loaded once for all S sums, which is what
 * makes this faster than one dot at a time: that one waited on its sum's additions and loaded twice per
 * product. Each sum keeps 4 lanes (column c in lane c % 4), added in column order, then as
 * (l0 + l1) + (l2 + l3): the same bits whichever S the row's dots were grouped in. */
#define ROW_DOTS(S)                                                                           \
    CLONES static void row_dots_##S(const double *a, const double *b, Py_ssize_t width4,      \
                                    double *out) {                                            \
        lanes_t sums[S];                                                                      \
        for (int s = 0; s < S; s++) sums[s] = (lanes_t){0.0, 0.0, 0.0, 0.0};                  \
        for (Py_ssize_t c = 0; c < width4; c += 4) {                                          \
            lanes_t x;                                                                        \
            memcpy(&x, a + c, sizeof x);                                                      \
            for (int s = 0; s < S; s++) {                                                     \
                lanes_t y;                                                                    \
                memcpy(&y, b + s * COLUMNS + c, sizeof y);                                    \
                sums[s] += x * y;                                                             \
            }                                                                                 \
        }                                                                                     \
        for (int s = 0; s < S; s++) out[s] += (sums[s][0] + sums[s][1]) + (sums[s][2] + sums[s][3]); \
    }

ROW_DOTS(1)
ROW_DOTS(2)
ROW_DOTS(3)
ROW_DOTS(4)
ROW_DOTS(5)
ROW_DOTS(6)
ROW_DOTS(7)
ROW_DOTS(8)

typedef void (*row_dots_fn)(const double *, const double *, Py_ssize_t, double *);
static const row_dots_fn ROW_DOTS_OF[ROW_GROUP + 1] = {
    NULL, row_dots_1, row_dots_2, row_dots_3, row_dots_4, row_dots_5, row_dots_6, row_dots_7, row_dots_8,
};

/* centred_gram(stack, out): out = the centred Gram matrix of the rows of stack.
 *
 * stack: a C-contiguous float32 buffer of rows x columns values (columns = its length / rows). out: a
 * writable C-contiguous float64 buffer of rows x rows values, overwritten. */
static PyObject *centred_gram(PyObject *self, PyObject *args) {
    PyObject *stack_obj, *out_obj;
    Py_ssize_t rows;
    if (!PyArg_ParseTuple(args, "OOn", &stack_obj, &out_obj, &rows)) return NULL;
    Py_buffer stack, out;
    if (PyObject_GetBuffer(stack_obj, &stack, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&stack);
        return NULL;
    }
    if (rows < 1 || strcmp(stack.format, "f") != 0 || stack.len % (rows * 4) != 0 ||
        strcmp(out.format, "d") != 0 || out.len != rows * rows * (Py_ssize_t)sizeof(double)) {
        PyBuffer_Release(&stack);
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_TypeError,
                        "centred_gram: stack must be rows x columns float32, out rows x rows float64");
        return NULL;
    }
    Py_ssize_t columns = stack.len / (rows * 4);
    double *buffer = PyMem_RawMalloc((size_t)(rows + 1) * COLUMNS * sizeof(double));
    if (buffer == NULL) {
        PyBuffer_Release(&stack);
        PyBuffer_Release(&out);
        return PyErr_NoMemory();
    }
    const float *x = (const float *)stack.buf;
    double *gram = (double *)out.buf, *mean = buffer, *centred = buffer + COLUMNS;
    Py_BEGIN_ALLOW_THREADS;
    memset(gram, 0, (size_t)(rows * rows) * sizeof(double));
    for (Py_ssize_t start = 0; start < columns; start += COLUMNS) {
        Py_ssize_t width = columns - start < COLUMNS ? columns - start : COLUMNS;
        centre_block(x, rows, columns, start, width, mean, centred);
        Py_ssize_t width4 = (width + 3) & ~(Py_ssize_t)3;
        for (Py_ssize_t i = 0; i < rows; i++)
            for (Py_ssize_t c = width; c < width4; c++) centred[i * COLUMNS + c] = 0.0;
        for (Py_ssize_t i = 0; i < rows; i++)
            for (Py_ssize_t j = 0; j <= i; j += ROW_GROUP) {
                Py_ssize_t group = i + 1 - j < ROW_GROUP ? i + 1 - j : ROW_GROUP;
                ROW_DOTS_OF[group](centred + i * COLUMNS, centred + j * COLUMNS, width4, gram + i * rows + j);
            }
    }
    for (Py_ssize_t i = 0; i < rows; i++)
        for (Py_ssize_t j = i + 1; j < rows; j++) gram[i * rows + j] = gram[j * rows + i];
    Py_END_ALLOW_THREADS;
    PyMem_RawFree(buffer);
    PyBuffer_Release(&stack);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

/* A C-contiguous buffer of `count` items of one of `formats` (struct codes) and `itemsize` bytes. */
static int get_array(PyObject *obj, Py_buffer *view, const char *formats, Py_ssize_t itemsize,
                     Py_ssize_t count, int writable, const char *what) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) return -1;
    const char *format = view->format ? view->format : "B";
    if (format[0] == '=' || format[0] == '<' || format[0] == '@') format++;
    if (view->itemsize != itemsize || strlen(format) != 1 || strchr(formats, format[0]) == NULL ||
        (count >= 0 && view->len != count * itemsize)) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_TypeError, "count_sketch: %s has the wrong type or size", what);
        return -1;
    }
    return 0;
}

/* tmp = S @ W: row b of tmp adds the rows of W listed in S's CSR row b, times their signs. */
CLONES static void sketch_rows(const float *w, Py_ssize_t cols, const int64_t *indptr,
                               const int64_t *indices, const double *signs, Py_ssize_t k, double *tmp) {
    for (Py_ssize_t b = 0; b < k; b++) {
        double *row = tmp + b * cols;
        for (Py_ssize_t c = 0; c < cols; c++) row[c] = 0.0;
        for (int64_t e = indptr[b]; e < indptr[b + 1]; e++) {
            const float *source = w + indices[e] * cols;
            const double sign = signs[e];
            for (Py_ssize_t c = 0; c < cols; c++) row[c] += sign * (double)source[c];
        }
    }
}

/* out = tmp @ T^T: entry (b, d) adds the entries of tmp's row b at the columns in T's CSR row d. */
static void sketch_columns(const double *tmp, Py_ssize_t cols, Py_ssize_t k, const int64_t *indptr,
                           const int64_t *indices, const double *signs, Py_ssize_t k2, double *out) {
    for (Py_ssize_t b = 0; b < k; b++) {
        const double *row = tmp + b * cols;
        for (Py_ssize_t d = 0; d < k2; d++) {
            double sum = 0.0;
            for (int64_t e = indptr[d]; e < indptr[d + 1]; e++) sum += signs[e] * row[indices[e]];
            out[b * k2 + d] = sum;
        }
    }
}

/* count_sketch(stack, models, rows, cols, s_indptr, s_indices, s_signs, t_indptr, t_indices, t_signs, out)
 *
 * stack: models x rows x cols float32. S: k x rows and T: k2 x cols, in CSR arrays (indptr and indices
 * int64, signs float64; every index in range). out: models x k x k2 float64, overwritten with S W T^T of
 * each model's W. */
static PyObject *count_sketch(PyObject *self, PyObject *args) {
    PyObject *objs[7], *out_obj, *stack_obj;
    Py_ssize_t models, rows, cols;
    if (!PyArg_ParseTuple(args, "OnnnOOOOOOO", &stack_obj, &models, &rows, &cols, &objs[0], &objs[1],
                          &objs[2], &objs[3], &objs[4], &objs[5], &out_obj))
        return NULL;
    Py_buffer stack, parts[6], out;
    const char *names[6] = {"s_indptr", "s_indices", "s_signs", "t_indptr", "t_indices", "t_signs"};
    if (models < 0 || rows < 1 || cols < 1) {
        PyErr_SetString(PyExc_ValueError, "count_sketch: models >= 0, rows >= 1 and cols >= 1");
        return NULL;
    }
    if (get_array(stack_obj, &stack, "f", 4, models * rows * cols, 0, "stack") < 0) return NULL;
    int got = 0;
    for (; got < 6; got++) {
        int is_signs = got % 3 == 2;
        if (get_array(objs[got], &parts[got], is_signs ? "d" : "lq", 8, -1, 0, names[got]) < 0) break;
    }
    Py_ssize_t k = got == 6 ? parts[0].len / 8 - 1 : 0, k2 = got == 6 ? parts[3].len / 8 - 1 : 0;
    int ok = got == 6;
    if (ok) {
        const int64_t *sp = parts[0].buf, *si = parts[1].buf, *tp = parts[3].buf, *ti = parts[4].buf;
        ok = k >= 1 && k2 >= 1 && sp[0] == 0 && tp[0] == 0 && sp[k] * 8 == parts[1].len && sp[k] * 8 == parts[2].len &&
             tp[k2] * 8 == parts[4].len && tp[k2] * 8 == parts[5].len;
        for (Py_ssize_t b = 0; ok && b < k; b++) ok = sp[b] <= sp[b + 1];
        for (Py_ssize_t d = 0; ok && d < k2; d++) ok = tp[d] <= tp[d + 1];
        for (int64_t e = 0; ok && e < sp[k]; e++) ok = si[e] >= 0 && si[e] < rows;
        for (int64_t e = 0; ok && e < tp[k2]; e++) ok = ti[e] >= 0 && ti[e] < cols;
        if (!ok) PyErr_SetString(PyExc_ValueError, "count_sketch: the sketches are not valid CSR arrays");
    }
    if (ok && get_array(out_obj, &out, "d", 8, models * k * k2, 1, "out") < 0) ok = 0;
    double *tmp = ok ? PyMem_RawMalloc((size_t)(k * cols) * sizeof(double)) : NULL;
    if (ok && tmp == NULL) {
        PyErr_NoMemory();
        PyBuffer_Release(&out);
        ok = 0;
    }
    if (ok) {
        const float *w = stack.buf;
        double *o = out.buf;
        Py_BEGIN_ALLOW_THREADS;
        for (Py_ssize_t m = 0; m < models; m++) {
            sketch_rows(w + m * rows * cols, cols, parts[0].buf, parts[1].buf, parts[2].buf, k, tmp);
            sketch_columns(tmp, cols, k, parts[3].buf, parts[4].buf, parts[5].buf, k2, o + m * k * k2);
        }
        Py_END_ALLOW_THREADS;
        PyMem_RawFree(tmp);
        PyBuffer_Release(&out);
    }
    for (int i = 0; i < got; i++) PyBuffer_Release(&parts[i]);
    PyBuffer_Release(&stack);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"centred_gram", centred_gram, METH_VARARGS,
     "centred_gram(stack, out, rows): the Gram matrix of the rows of a float32 stack, each column centred."},
    {"count_sketch", count_sketch, METH_VARARGS,
     "count_sketch(stack, models, rows, cols, s_indptr, s_indices, s_signs, t_indptr, t_indices, t_signs, out): "
     "S W T^T of each model's matrix."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_linalg", NULL, -1, methods};

PyMODINIT_FUNC PyInit__linalg(void) { return PyModule_Create(&module); }

/*
 * libgopt_kernels: the fused GoPT prompter kernels (CUP group merge, ACP prompt injection)
 * as a C library. The kernels are the project's Triton kernels compiled ahead of time
 * (python -m kernels.aot) for several GPU architectures and embedded as cubins, plus PTX
 * that newer GPUs compile at load time. libcuda.so.1 is opened at run time; the library
 * loads on machines without a GPU and reports GOPT_NO_DRIVER there.
 *
 * Every call is stream-ordered: work is queued on the caller's stream only; nothing is
 * allocated and nothing synchronises. CUstream and cudaStream_t are the same type
 * (struct CUstream_st *), so either can be passed. The calling thread's current CUDA
 * context must be the one the stream and the pointers belong to (the runtime API's
 * primary context, TensorRT's and PyTorch's included).
 *
 * Semantics are those of the project's PyTorch reference (kernels/reference.py):
 *   group merge  (GoPT eq. 8-10):  a' [B,S,d], c' [B,C,d] -> P [B,C,d]
 *   prompt inject (eq. 11-14, 3):  f [B,S,D], P [B,C,d] -> f * (1 + up(p)) [B,S,D]
 * d must be 16, 32, 64 or 128 (and one the library was built for), 1 <= C <= 256.
 * Activations may have any element strides; weights, biases and outputs are contiguous.
 * All tensors of one call share one dtype. Sizes and strides must fit in int32, and so
 * must the element offsets the kernels form in int32 (c' and P, B*C*d, the workspace).
 * Empty inputs: B = 0 launches nothing; S = 0 gives P = c' + o.bias (group merge, every
 * group empty) and an empty output (prompt inject), as the reference does. Pointers to
 * empty tensors may be NULL.
 *
 * Needs a CUDA 12.0 or newer driver. Kernels are loaded into a context on first use and
 * cached per context (cuCtxGetId), a bounded number of them.
 *
 * Thread safety: every function may be called from several threads at once. The error
 * text of gopt_last_error() is per thread.
 */
#ifndef GOPT_KERNELS_H
#define GOPT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GOPT_ABI_VERSION 1

typedef enum {
    GOPT_OK = 0,
    GOPT_INVALID_ARG = 1,          /* a null pointer, a bad size or stride, a struct of the wrong size */
    GOPT_UNSUPPORTED = 2,          /* d not in {16,32,64,128}, C > 256, sizes beyond int32 or the grid limits */
    GOPT_NO_DRIVER = 3,            /* libcuda.so.1 cannot be opened or initialised */
    GOPT_NO_KERNEL_FOR_ARCH = 4,   /* no cubin or PTX for this GPU, dtype, d and C */
    GOPT_CUDA_ERROR = 5,           /* a CUDA driver call failed (module load, launch) */
    GOPT_WORKSPACE_TOO_SMALL = 6   /* see gopt_group_merge_workspace_size */
} gopt_status;

typedef enum { GOPT_FLOAT32 = 0, GOPT_FLOAT16 = 1, GOPT_BFLOAT16 = 2 } gopt_dtype;

typedef enum { GOPT_GROUP_MERGE = 0, GOPT_PROMPT_INJECT = 1 } gopt_kernel;

typedef struct CUstream_st *gopt_stream; /* == CUstream == cudaStream_t */

typedef struct {
    size_t size;           /* sizeof(gopt_group_merge_args) */
    int32_t dtype;         /* gopt_dtype */
    int64_t B, S, C, d;
    const void *a;         /* [B, S, d], element strides a_strides */
    int64_t a_strides[3];
    const void *c;         /* [B, C, d], element strides c_strides */
    int64_t c_strides[3];
    const void *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w, *o_b; /* [d, d] / [d], contiguous */
    void *out;             /* P [B, C, d], contiguous */
} gopt_group_merge_args;

typedef struct {
    size_t size;           /* sizeof(gopt_prompt_inject_args) */
    int32_t dtype;         /* gopt_dtype */
    int64_t B, S, D, C, d;
    const void *f;         /* [B, S, D], element strides f_strides */
    int64_t f_strides[3];
    const void *P;         /* [B, C, d], element strides P_strides */
    int64_t P_strides[3];
    const void *down_w, *down_b;                                /* [d, D], [d] */
    const void *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w, *o_b; /* [d, d] / [d] */
    const void *up_w, *up_b;                                    /* [D, d], [D] */
    void *out;             /* [B, S, D], contiguous */
} gopt_prompt_inject_args;

/* GOPT_ABI_VERSION of the library. */
int gopt_version(void);

/* What the last failing call of this thread did wrong (never NULL; "" after success). */
const char *gopt_last_error(void);

/* Device bytes gopt_group_merge needs as workspace for these sizes (0 when S fits one
 * program per sample); an upper bound for every GPU and dtype the library serves. */
size_t gopt_group_merge_workspace_size(int64_t B, int64_t S, int64_t C, int64_t d);

/* Whether this library can run `kernel` (gopt_kernel) in `dtype` on the calling thread's
 * current device (device 0 when no context is current) with these C and d, for every batch
 * and token count up to B and S, and token width D (prompt inject only); -1: not known
 * yet, any. GOPT_OK, or the status a launch would return, with gopt_last_error() saying
 * why. TensorRT plugins ask this at build time. */
int gopt_can_run(int kernel, int dtype, int64_t B, int64_t S, int64_t C, int64_t d, int64_t D);

/* CUP group merge on `stream`; `workspace`: device memory of workspace_bytes (may be NULL
 * when gopt_group_merge_workspace_size is 0). Returns a gopt_status. */
int gopt_group_merge(const gopt_group_merge_args *args, void *workspace, size_t workspace_bytes,
                     gopt_stream stream);

/* ACP cross-attention and prompt injection on `stream`. Returns a gopt_status. */
int gopt_prompt_inject(const gopt_prompt_inject_args *args, gopt_stream stream);

#ifdef __cplusplus
}
#endif
#endif /* GOPT_KERNELS_H */

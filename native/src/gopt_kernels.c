/* libgopt_kernels entry points: argument checks, the choice of an embedded build for the
 * running GPU, and the launch on the caller's stream. See include/gopt_kernels.h. */
#include "gopt_kernels.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cuda_driver.h"
#include "variants.h"

#define GOPT_EXPORT __attribute__((visibility("default")))

static __thread char t_error[512];

static int fail(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t_error, sizeof t_error, fmt, ap);
    va_end(ap);
    return status;
}

GOPT_EXPORT int gopt_version(void) { return GOPT_ABI_VERSION; }

GOPT_EXPORT const char *gopt_last_error(void) { return t_error; }

/* Every entry point that reports a status starts here: a call that succeeds leaves "". */
static void begin(void) { t_error[0] = '\0'; }

static const char *dtype_name(int dtype) {
    static const char *names[] = {"fp32", "fp16", "bf16"};
    return dtype >= 0 && dtype <= 2 ? names[dtype] : "?";
}

static int64_t c_pad_of(int64_t C) {
    int64_t p = 16;
    while (p < C) p *= 2;
    return p;
}

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* ---- checks ------------------------------------------------------------------------------ */

static int check_sizes(const char *kernel, int dtype, int64_t C, int64_t d) {
    if (dtype < GOPT_FLOAT32 || dtype > GOPT_BFLOAT16)
        return fail(GOPT_INVALID_ARG, "%s: dtype must be GOPT_FLOAT32, GOPT_FLOAT16 or GOPT_BFLOAT16, got %d",
                    kernel, dtype);
    if (d != 16 && d != 32 && d != 64 && d != 128)
        return fail(GOPT_UNSUPPORTED, "%s: prompt width d must be 16, 32, 64 or 128, got %lld", kernel,
                    (long long)d);
    if (C < 1 || C > 256)
        return fail(GOPT_UNSUPPORTED, "%s: the number of groups C must be in [1, 256], got %lld", kernel,
                    (long long)C);
    return GOPT_OK;
}

static int check_int32(const char *kernel, const char *what, const int64_t *v, int n) {
    for (int i = 0; i < n; ++i) {
        if (v[i] < 0)
            return fail(GOPT_INVALID_ARG, "%s: %s[%d] must be >= 0, got %lld", kernel, what, i, (long long)v[i]);
        if (v[i] > INT32_MAX)
            return fail(GOPT_UNSUPPORTED, "%s: %s[%d] = %lld exceeds int32 (the kernels index with int32)", kernel,
                        what, i, (long long)v[i]);
    }
    return GOPT_OK;
}

static int check_pointers(const char *kernel, const void *const *ptrs, const char *const *names, int n) {
    for (int i = 0; i < n; ++i)
        if (!ptrs[i]) return fail(GOPT_INVALID_ARG, "%s: %s is NULL", kernel, names[i]);
    return GOPT_OK;
}

/* An element offset the kernels form in int32 (value < 0: not known yet). */
static int check_offset(const char *kernel, const char *what, int64_t value) {
    if (value > INT32_MAX)
        return fail(GOPT_UNSUPPORTED, "%s: %s = %lld exceeds int32 (the kernels index it with int32)", kernel, what,
                    (long long)value);
    return GOPT_OK;
}

/* The largest element offset into a [n0, n1, n2] tensor of these strides (non-negative). */
static int64_t extent(int64_t n0, int64_t n1, int64_t n2, const int64_t strides[3]) {
    const int64_t n[3] = {n0, n1, n2};
    int64_t e = 0;
    for (int i = 0; i < 3; ++i)
        if (n[i] > 0) e += (n[i] - 1) * strides[i];
    return e;
}

/* a * b, or -1 when either is not known (< 0). */
static int64_t known_product(int64_t a, int64_t b) { return a < 0 || b < 0 ? -1 : a * b; }

/* ---- which build runs on this GPU -------------------------------------------------------- */

typedef struct {
    int kernel, dtype, d, c_pad, fused; /* fused -1: any (not a merge) */
} variant_key;

static int matches(const gopt_variant *v, const variant_key *k) {
    return v->kernel == k->kernel && v->dtype == k->dtype && v->d == k->d && v->c_pad == k->c_pad &&
           (k->fused < 0 || v->fused == k->fused);
}

static const gopt_variant *find(const variant_key *k, int capability, int ptx) {
    for (int i = 0; i < gopt_variant_count; ++i) {
        const gopt_variant *v = &gopt_variants[i];
        if (v->is_ptx == ptx && v->capability == capability && matches(v, k)) return v;
    }
    return NULL;
}

/* The exact capability's cubin; then the cubins a device of this capability runs
 * (sm_86 -> sm_80; sm_89 -> sm_86, sm_80; never for sm_87 or an arch-specific "a" build);
 * then a PTX image at or below the device's capability, compiled by the driver. */
static const gopt_variant *choose(const variant_key *k, int capability) {
    const gopt_variant *v = find(k, capability, 0);
    static const int after86[] = {80, 0}, after89[] = {86, 80, 0};
    const int *compatible = capability == 86 ? after86 : capability == 89 ? after89 : NULL;
    for (; !v && compatible && *compatible; ++compatible) {
        v = find(k, *compatible, 0);
        if (v && v->arch_specific) v = NULL;
    }
    for (int i = 0; !v && i < gopt_variant_count; ++i) {
        const gopt_variant *p = &gopt_variants[i];
        if (p->is_ptx && p->capability <= capability && matches(p, k)) v = p;
    }
    return v;
}

static int embedded(const variant_key *k) {
    for (int i = 0; i < gopt_variant_count; ++i)
        if (matches(&gopt_variants[i], k)) return 1;
    return 0;
}

static const char *kernel_name(int kernel, int fused) {
    if (kernel == GOPT_K_GROUP_MERGE) return fused ? "group_merge (one program per sample)" : "group_merge (split)";
    return kernel == GOPT_K_GROUP_MERGE_EPILOGUE ? "group_merge_epilogue" : "prompt_inject";
}

/* The device the calling thread works on: its capability, opt-in shared memory per block
 * and grid limits. */
typedef struct {
    int capability, shared_optin, max_grid[3];
} device_info;

static int query_device(const gopt_cuda *cu, int or_device0, device_info *dev) {
    static const CUdevice_attribute grid[3] = {CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X, CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y,
                                               CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z};
    CUcontext ctx = NULL;
    CUdevice d;
    int major = 0, minor = 0;
    CUresult r = cu->cuCtxGetCurrent(&ctx);
    if (r == CUDA_SUCCESS) r = ctx || !or_device0 ? cu->cuCtxGetDevice(&d) : cu->cuDeviceGet(&d, 0);
    if (r == CUDA_SUCCESS) r = cu->cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, d);
    if (r == CUDA_SUCCESS) r = cu->cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, d);
    if (r == CUDA_SUCCESS)
        r = cu->cuDeviceGetAttribute(&dev->shared_optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, d);
    for (int i = 0; i < 3 && r == CUDA_SUCCESS; ++i) r = cu->cuDeviceGetAttribute(&dev->max_grid[i], grid[i], d);
    if (r != CUDA_SUCCESS)
        return fail(GOPT_CUDA_ERROR, "no current CUDA context or device on this thread (%s); make the stream's "
                    "context current first", gopt_cuda_error_name(cu, r));
    dev->capability = 10 * major + minor;
    return GOPT_OK;
}

/* The build of `k` this device runs, or NO_KERNEL_FOR_ARCH saying what is missing. */
static int select_build(const variant_key *k, const device_info *dev, const gopt_variant **out) {
    const char *name = kernel_name(k->kernel, k->fused);
    const gopt_variant *v = choose(k, dev->capability);
    if (!v && !embedded(k))
        return fail(GOPT_NO_KERNEL_FOR_ARCH, "%s %s d=%d C_PAD=%d: this library has no such build for any GPU; "
                    "rebuild it with python -m kernels.aot covering it (GOPT_DTYPES / GOPT_GROUPS / "
                    "GOPT_PROMPT_DIM)", name, dtype_name(k->dtype), k->d, k->c_pad);
    if (!v)
        return fail(GOPT_NO_KERNEL_FOR_ARCH, "%s: no build for sm_%d %s d=%d C_PAD=%d in this library (neither a "
                    "cubin nor PTX it can run); rebuild with GOPT_CUDA_ARCHS including it", name, dev->capability,
                    dtype_name(k->dtype), k->d, k->c_pad);
    if ((int)v->shared_bytes > dev->shared_optin)
        return fail(GOPT_NO_KERNEL_FOR_ARCH, "%s sm_%s %s: needs %u B of shared memory, the device allows %d B", name,
                    v->arch, dtype_name(v->dtype), v->shared_bytes, dev->shared_optin);
    *out = v;
    return GOPT_OK;
}

/* The launch grid of build v for B samples and S tokens, within the device's limits. */
static int grid_of(const gopt_variant *v, int64_t B, int64_t S, const device_info *dev, unsigned int g[3]) {
    v->grid(B, S, g);
    for (int i = 0; i < 3; ++i)
        if ((int64_t)g[i] > dev->max_grid[i])
            return fail(GOPT_UNSUPPORTED, "%s: B=%lld S=%lld needs a grid of (%u, %u, %u) programs, the device "
                        "allows (%d, %d, %d); split the batch", kernel_name(v->kernel, v->fused), (long long)B,
                        (long long)S, g[0], g[1], g[2], dev->max_grid[0], dev->max_grid[1], dev->max_grid[2]);
    return GOPT_OK;
}

/* ---- launch ------------------------------------------------------------------------------ */

typedef union {
    CUdeviceptr ptr;
    int32_t i32;
    float f32;
} param_value;

static int launch(const gopt_cuda *cu, const gopt_variant *v, const param_value *values, const unsigned int g[3],
                  CUstream stream) {
    CUcontext stream_ctx = NULL, current = NULL;
    if (stream && cu->cuStreamGetCtx(stream, &stream_ctx) == CUDA_SUCCESS &&
        cu->cuCtxGetCurrent(&current) == CUDA_SUCCESS && stream_ctx != current)
        return fail(GOPT_INVALID_ARG, "the stream belongs to another CUDA context than the current one");
    CUfunction fn;
    const char *what = "";
    const char *name = kernel_name(v->kernel, v->fused);
    CUresult r = gopt_cuda_function(cu, v->image, v->entry, v->shared_bytes, &fn, &what);
    if (r != CUDA_SUCCESS)
        return fail(GOPT_CUDA_ERROR, "%s sm_%s %s (%s): %s failed: %s", name, v->arch, v->is_ptx ? "PTX" : "cubin",
                    dtype_name(v->dtype), what, gopt_cuda_error_name(cu, r));
    void *params[GOPT_MAX_PARAMS];
    for (int i = 0; i < v->num_params; ++i) params[i] = (void *)&values[v->params[i]];
    r = cu->cuLaunchKernel(fn, g[0], g[1], g[2], v->block_x, 1, 1, v->shared_bytes, stream, params, NULL);
    if (r != CUDA_SUCCESS)
        return fail(GOPT_CUDA_ERROR, "%s sm_%s %s: cuLaunchKernel failed: %s", name, v->arch, dtype_name(v->dtype),
                    gopt_cuda_error_name(cu, r));
    return GOPT_OK;
}

static const gopt_cuda *driver(int *status) {
    char why[400];
    const gopt_cuda *cu = gopt_cuda_driver(why, sizeof why);
    *status = cu ? GOPT_OK : fail(GOPT_NO_DRIVER, "%s", why);
    return cu;
}

#define PTR(p) ((CUdeviceptr)(uintptr_t)(p))

/* All parameters zero (the scratch pointers stay NULL), then the caller's device pointers. */
static void set_pointers(param_value *p, const void *const *ptrs, const unsigned char *ids, int n) {
    memset(p, 0, sizeof(param_value) * GOPT_P_COUNT);
    for (int i = 0; i < n; ++i) p[ids[i]].ptr = PTR(ptrs[i]);
}

/* ---- group merge ------------------------------------------------------------------------- */

/* The smallest tokens-per-program any embedded merge build of (d, C_PAD) uses: the
 * workspace bound for every device and dtype. The tile table gives every merge build of one
 * d and C_PAD the same value, so the build launched always has exactly this one. */
static int64_t min_tokens_per_prog(int64_t d, int64_t c_pad) {
    int64_t best = 0;
    for (int i = 0; i < gopt_variant_count; ++i) {
        const gopt_variant *v = &gopt_variants[i];
        if (v->kernel == GOPT_K_GROUP_MERGE && v->d == d && v->c_pad == c_pad && v->tokens_per_prog > 0 &&
            (best == 0 || v->tokens_per_prog < best))
            best = v->tokens_per_prog;
    }
    return best;
}

static size_t workspace_layout(int64_t B, int64_t split, int64_t c_pad, int64_t d, size_t *counts_offset) {
    size_t sums = (size_t)(B * split * c_pad * d) * sizeof(float);
    *counts_offset = (sums + 255) / 256 * 256;
    return *counts_offset + (size_t)(B * split * c_pad) * sizeof(int32_t);
}

GOPT_EXPORT size_t gopt_group_merge_workspace_size(int64_t B, int64_t S, int64_t C, int64_t d) {
    if (B <= 0 || S <= 0 || C < 1 || C > 256) return 0;
    int64_t c_pad = c_pad_of(C), tpp = min_tokens_per_prog(d, c_pad);
    if (tpp <= 0 || S <= tpp) return 0;
    size_t counts_offset;
    return workspace_layout(B, cdiv(S, tpp), c_pad, d, &counts_offset);
}

/* The merge's launches for B samples and S tokens: the one-program build when S fits one
 * program per sample (S = 0 included: P = c' + o.bias), else the split build and its
 * epilogue (builds[0..1]; builds[1] NULL for one launch), and the grids. With `up_to`, B and
 * S are maxima (gopt_can_run): every build some smaller size needs is selected too. B, S < 0:
 * not known yet, any; grids are checked for what is known. */
typedef struct {
    const gopt_variant *builds[3];
    unsigned int grids[3][3];
    int64_t split, c_pad;
} merge_plan;

static int plan_merge(const char *kernel, int dtype, int64_t B, int64_t S, int64_t C, int64_t d, int up_to,
                      const device_info *dev, merge_plan *plan) {
    int64_t c_pad = c_pad_of(C), tpp = min_tokens_per_prog(d, c_pad);
    memset(plan, 0, sizeof *plan);
    plan->c_pad = c_pad;
    if (tpp == 0)
        return fail(GOPT_NO_KERNEL_FOR_ARCH, "%s: this library has no build for d=%lld C_PAD=%lld; rebuild with "
                    "GOPT_GROUPS / GOPT_PROMPT_DIM covering it", kernel, (long long)d, (long long)c_pad);
    int64_t B1 = B < 1 ? 1 : B, S1 = S < 1 ? 1 : S; /* a sample with no tokens still has its program */
    plan->split = S > tpp ? cdiv(S, tpp) : 1;
    int status = check_offset(kernel, "B*C*d", known_product(B, C * d));
    if (status == GOPT_OK && plan->split > 1)
        status = check_offset(kernel, "the workspace's B*split*C_PAD*d", known_product(B, plan->split * c_pad * d));
    if (status != GOPT_OK) return status;
    int n = 0;
    if (S <= tpp || up_to) { /* the one-program build */
        variant_key k = {GOPT_K_GROUP_MERGE, dtype, (int)d, (int)c_pad, 1};
        if ((status = select_build(&k, dev, &plan->builds[n])) != GOPT_OK) return status;
        if ((status = grid_of(plan->builds[n], B1, S1 < tpp ? S1 : tpp, dev, plan->grids[n])) != GOPT_OK)
            return status;
        ++n;
    }
    if (S > tpp || S < 0) {
        variant_key split = {GOPT_K_GROUP_MERGE, dtype, (int)d, (int)c_pad, 0};
        variant_key epilogue = {GOPT_K_GROUP_MERGE_EPILOGUE, dtype, (int)d, (int)c_pad, -1};
        if ((status = select_build(&split, dev, &plan->builds[n])) != GOPT_OK ||
            (status = grid_of(plan->builds[n], B1, S1, dev, plan->grids[n])) != GOPT_OK)
            return status;
        ++n;
        if ((status = select_build(&epilogue, dev, &plan->builds[n])) != GOPT_OK ||
            (status = grid_of(plan->builds[n], B1, S1, dev, plan->grids[n])) != GOPT_OK)
            return status;
    }
    return GOPT_OK;
}

GOPT_EXPORT int gopt_group_merge(const gopt_group_merge_args *x, void *workspace, size_t workspace_bytes,
                                 gopt_stream stream) {
    static const char *kernel = "gopt_group_merge";
    begin();
    if (!x || x->size != sizeof(gopt_group_merge_args))
        return fail(GOPT_INVALID_ARG, "%s: args must point to a gopt_group_merge_args with size = %zu", kernel,
                    sizeof(gopt_group_merge_args));
    int status = check_sizes(kernel, x->dtype, x->C, x->d);
    const int64_t sizes[] = {x->B, x->S, x->C, x->d};
    if (status == GOPT_OK) status = check_int32(kernel, "sizes (B, S, C, d)", sizes, 4);
    if (status == GOPT_OK) status = check_int32(kernel, "a_strides", x->a_strides, 3);
    if (status == GOPT_OK) status = check_int32(kernel, "c_strides", x->c_strides, 3);
    if (status == GOPT_OK) status = check_offset(kernel, "c's largest offset", extent(x->B, x->C, x->d, x->c_strides));
    if (status != GOPT_OK || x->B == 0) return status;
    const void *ptrs[] = {x->c, x->q_w, x->q_b, x->k_w, x->k_b, x->v_w, x->v_b, x->o_w, x->o_b, x->out, x->a};
    static const char *names[] = {"c", "q_w", "q_b", "k_w", "k_b", "v_w", "v_b", "o_w", "o_b", "out", "a"};
    static const unsigned char ids[] = {GOPT_P_c_ptr, GOPT_P_q_w, GOPT_P_q_b, GOPT_P_k_w, GOPT_P_k_b, GOPT_P_v_w,
                                        GOPT_P_v_b, GOPT_P_o_w, GOPT_P_o_b, GOPT_P_out_ptr, GOPT_P_a_ptr};
    if ((status = check_pointers(kernel, ptrs, names, x->S > 0 ? 11 : 10)) != GOPT_OK) return status; /* a: S > 0 */
    const gopt_cuda *cu = driver(&status);
    device_info dev;
    merge_plan plan;
    if (!cu || (status = query_device(cu, 0, &dev)) != GOPT_OK ||
        (status = plan_merge(kernel, x->dtype, x->B, x->S, x->C, x->d, 0, &dev, &plan)) != GOPT_OK)
        return status;

    param_value p[GOPT_P_COUNT];
    set_pointers(p, ptrs, ids, 11);
    p[GOPT_P_assign_ptr].ptr = PTR(x->out); /* STORE_ASSIGN is off in every build */
    p[GOPT_P_S].i32 = (int32_t)x->S, p[GOPT_P_C].i32 = (int32_t)x->C, p[GOPT_P_split].i32 = (int32_t)plan.split;
    p[GOPT_P_stride_ab].i32 = (int32_t)x->a_strides[0], p[GOPT_P_stride_as].i32 = (int32_t)x->a_strides[1];
    p[GOPT_P_stride_ad].i32 = (int32_t)x->a_strides[2];
    p[GOPT_P_stride_cb].i32 = (int32_t)x->c_strides[0], p[GOPT_P_stride_cc].i32 = (int32_t)x->c_strides[1];
    p[GOPT_P_stride_cd].i32 = (int32_t)x->c_strides[2];
    if (plan.split == 1) {
        p[GOPT_P_part_sum_ptr].ptr = p[GOPT_P_part_cnt_ptr].ptr = PTR(x->out); /* unused */
        return launch(cu, plan.builds[0], p, plan.grids[0], (CUstream)stream);
    }
    size_t counts_offset, need = workspace_layout(x->B, plan.split, plan.c_pad, x->d, &counts_offset);
    if (!workspace || workspace_bytes < need)
        return fail(GOPT_WORKSPACE_TOO_SMALL, "%s: B=%lld S=%lld C=%lld d=%lld needs %zu B of workspace, got %zu B%s",
                    kernel, (long long)x->B, (long long)x->S, (long long)x->C, (long long)x->d, need,
                    workspace ? workspace_bytes : (size_t)0, workspace ? "" : " (NULL)");
    p[GOPT_P_part_sum_ptr].ptr = PTR(workspace);
    p[GOPT_P_part_cnt_ptr].ptr = PTR(workspace) + counts_offset;
    if ((status = launch(cu, plan.builds[0], p, plan.grids[0], (CUstream)stream)) != GOPT_OK) return status;
    return launch(cu, plan.builds[1], p, plan.grids[1], (CUstream)stream);
}

/* ---- prompt inject ----------------------------------------------------------------------- */

static int plan_inject(int dtype, int64_t B, int64_t S, int64_t C, int64_t d,
                       const device_info *dev, const gopt_variant **build, unsigned int g[3]) {
    variant_key key = {GOPT_K_PROMPT_INJECT, dtype, (int)d, (int)c_pad_of(C), -1};
    int status = select_build(&key, dev, build);
    if (status == GOPT_OK) status = grid_of(*build, B < 1 ? 1 : B, S < 1 ? 1 : S, dev, g);
    return status;
}

GOPT_EXPORT int gopt_prompt_inject(const gopt_prompt_inject_args *x, gopt_stream stream) {
    static const char *kernel = "gopt_prompt_inject";
    begin();
    if (!x || x->size != sizeof(gopt_prompt_inject_args))
        return fail(GOPT_INVALID_ARG, "%s: args must point to a gopt_prompt_inject_args with size = %zu", kernel,
                    sizeof(gopt_prompt_inject_args));
    int status = check_sizes(kernel, x->dtype, x->C, x->d);
    const int64_t sizes[] = {x->B, x->S, x->D, x->C, x->d};
    if (status == GOPT_OK) status = check_int32(kernel, "sizes (B, S, D, C, d)", sizes, 5);
    if (status == GOPT_OK) status = check_int32(kernel, "f_strides", x->f_strides, 3);
    if (status == GOPT_OK) status = check_int32(kernel, "P_strides", x->P_strides, 3);
    if (status == GOPT_OK && x->D < 1) status = fail(GOPT_INVALID_ARG, "%s: token width D must be >= 1", kernel);
    if (status == GOPT_OK) status = check_offset(kernel, "P's largest offset", extent(x->B, x->C, x->d, x->P_strides));
    if (status == GOPT_OK) status = check_offset(kernel, "(D-1)*f_strides[2]", (x->D - 1) * x->f_strides[2]);
    if (status != GOPT_OK || x->B == 0 || x->S == 0) return status;
    const void *ptrs[] = {x->f, x->P, x->down_w, x->down_b, x->q_w, x->q_b, x->k_w, x->k_b,
                          x->v_w, x->v_b, x->o_w, x->o_b, x->up_w, x->up_b, x->out};
    static const char *names[] = {"f", "P", "down_w", "down_b", "q_w", "q_b", "k_w", "k_b",
                                  "v_w", "v_b", "o_w", "o_b", "up_w", "up_b", "out"};
    static const unsigned char ids[] = {GOPT_P_f_ptr, GOPT_P_P_ptr, GOPT_P_down_w, GOPT_P_down_b, GOPT_P_q_w,
                                        GOPT_P_q_b, GOPT_P_k_w, GOPT_P_k_b, GOPT_P_v_w, GOPT_P_v_b, GOPT_P_o_w,
                                        GOPT_P_o_b, GOPT_P_up_w, GOPT_P_up_b, GOPT_P_out_ptr};
    if ((status = check_pointers(kernel, ptrs, names, 15)) != GOPT_OK) return status;
    const gopt_cuda *cu = driver(&status);
    device_info dev;
    const gopt_variant *build;
    unsigned int g[3];
    if (!cu || (status = query_device(cu, 0, &dev)) != GOPT_OK ||
        (status = plan_inject(x->dtype, x->B, x->S, x->C, x->d, &dev, &build, g)) != GOPT_OK)
        return status;

    param_value p[GOPT_P_COUNT];
    set_pointers(p, ptrs, ids, 15);
    p[GOPT_P_assign_ptr].ptr = PTR(x->out); /* STORE_ASSIGN is off in every build */
    p[GOPT_P_S].i32 = (int32_t)x->S, p[GOPT_P_C].i32 = (int32_t)x->C, p[GOPT_P_D].i32 = (int32_t)x->D;
    p[GOPT_P_inv_sqrt_d].f32 = (float)(1.0 / sqrt((double)x->d));
    p[GOPT_P_stride_fb].i32 = (int32_t)x->f_strides[0], p[GOPT_P_stride_fs].i32 = (int32_t)x->f_strides[1];
    p[GOPT_P_stride_fd].i32 = (int32_t)x->f_strides[2];
    p[GOPT_P_stride_pb].i32 = (int32_t)x->P_strides[0], p[GOPT_P_stride_pc].i32 = (int32_t)x->P_strides[1];
    p[GOPT_P_stride_pd].i32 = (int32_t)x->P_strides[2];
    return launch(cu, build, p, g, (CUstream)stream);
}

/* ---- what this library can run here ------------------------------------------------------ */

static int can_run(int kernel, int dtype, int64_t B, int64_t S, int64_t C, int64_t d, int64_t D) {
    const char *name = kernel == GOPT_GROUP_MERGE ? "gopt_group_merge" : "gopt_prompt_inject";
    int status = check_sizes(name, dtype, C, d);
    const int64_t sizes[] = {B, S, D};
    static const char *size_names[] = {"B", "S", "D"};
    for (int i = 0; i < 3 && status == GOPT_OK; ++i) status = check_offset(name, size_names[i], sizes[i]);
    /* the strides of contiguous activations, which the kernels take as int32 */
    if (status == GOPT_OK) status = check_offset(name, "S*d", known_product(S, d));
    if (status == GOPT_OK && kernel == GOPT_PROMPT_INJECT) status = check_offset(name, "S*D", known_product(S, D));
    if (status == GOPT_OK) status = check_offset(name, "B*C*d", known_product(B, C * d));
    if (status == GOPT_OK && kernel == GOPT_PROMPT_INJECT && D == 0)
        status = fail(GOPT_INVALID_ARG, "%s: token width D must be >= 1", name);
    if (status != GOPT_OK) return status;
    const gopt_cuda *cu = driver(&status);
    device_info dev;
    if (!cu || (status = query_device(cu, 1, &dev)) != GOPT_OK) return status;
    if (kernel == GOPT_GROUP_MERGE) {
        merge_plan plan;
        return plan_merge(name, dtype, B, S, C, d, 1, &dev, &plan);
    }
    const gopt_variant *build;
    unsigned int g[3];
    return plan_inject(dtype, B, S, C, d, &dev, &build, g);
}

GOPT_EXPORT int gopt_can_run(int kernel, int dtype, int64_t B, int64_t S, int64_t C, int64_t d, int64_t D) {
    begin();
    if (kernel != GOPT_GROUP_MERGE && kernel != GOPT_PROMPT_INJECT)
        return fail(GOPT_INVALID_ARG, "gopt_can_run: kernel must be GOPT_GROUP_MERGE or GOPT_PROMPT_INJECT, got %d",
                    kernel);
    if (C >= 0 && d >= 0) return can_run(kernel, dtype, B, S, C, d, D);
    /* C or d not known yet: whether this dtype runs with some C and d */
    static const int64_t widths[] = {16, 32, 64, 128}, groups[] = {16, 32, 64, 128, 256};
    const int64_t *ds = d >= 0 ? &d : widths, *cs = C >= 0 ? &C : groups;
    int status = GOPT_NO_KERNEL_FOR_ARCH;
    for (int i = 0; i < (d >= 0 ? 1 : 4) && status != GOPT_OK; ++i)
        for (int j = 0; j < (C >= 0 ? 1 : 5) && status != GOPT_OK; ++j) {
            status = can_run(kernel, dtype, B, S, cs[j], ds[i], D);
            if (status == GOPT_NO_DRIVER || status == GOPT_CUDA_ERROR || status == GOPT_INVALID_ARG) return status;
        }
    if (status == GOPT_OK) {
        begin();
    } else {
        char last[sizeof t_error];
        snprintf(last, sizeof last, "%s", t_error);
        fail(status, "gopt_can_run: no %s build for any %s runs on this device (the last tried: %s)", dtype_name(dtype),
             C < 0 && d < 0 ? "C and d" : C < 0 ? "C" : "d", last);
    }
    return status;
}

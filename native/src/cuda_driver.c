/* dlopen("libcuda.so.1") wrapper and per-context kernel cache; see cuda_driver.h. */
#include "cuda_driver.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static gopt_cuda g_cuda;
static const gopt_cuda *g_driver;
static char g_why[400];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* Exact symbol names: cuda.h maps none of these to a versioned name unless per-thread
 * default streams are compiled in (which this library does not do). */
#define GOPT_SYM(handle, name)                                                    \
    do {                                                                          \
        *(void **)(&g_cuda.name) = dlsym(handle, #name);                         \
        if (!g_cuda.name) {                                                       \
            snprintf(g_why, sizeof g_why, "libcuda.so.1 lacks %s (a CUDA 12.0 or newer driver is needed): %s", \
                     #name, dlerror());                                           \
            return;                                                               \
        }                                                                         \
    } while (0)

static void open_driver(void) {
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(g_why, sizeof g_why, "cannot load the CUDA driver: %s", e ? e : "dlopen failed");
        return;
    }
    GOPT_SYM(h, cuInit);
    GOPT_SYM(h, cuGetErrorName);
    GOPT_SYM(h, cuCtxGetCurrent);
    GOPT_SYM(h, cuCtxGetDevice);
    GOPT_SYM(h, cuCtxGetId); /* CUDA 12.0 */
    GOPT_SYM(h, cuDeviceGet);
    GOPT_SYM(h, cuStreamGetCtx);
    GOPT_SYM(h, cuDeviceGetAttribute);
    GOPT_SYM(h, cuModuleLoadData);
    GOPT_SYM(h, cuModuleGetFunction);
    GOPT_SYM(h, cuFuncSetAttribute);
    GOPT_SYM(h, cuLaunchKernel);
    CUresult r = g_cuda.cuInit(0);
    if (r != CUDA_SUCCESS) {
        const char *name = NULL;
        g_cuda.cuGetErrorName(r, &name);
        snprintf(g_why, sizeof g_why, "cuInit failed: %s (no usable GPU or driver)", name ? name : "unknown error");
        return;
    }
    g_driver = &g_cuda;
}

const gopt_cuda *gopt_cuda_driver(char *why, size_t why_size) {
    pthread_once(&g_once, open_driver);
    if (!g_driver && why && why_size)
        snprintf(why, why_size, "%s", g_why);
    return g_driver;
}

const char *gopt_cuda_error_name(const gopt_cuda *cu, CUresult r) {
    const char *name = NULL;
    if (cu->cuGetErrorName(r, &name) != CUDA_SUCCESS || !name)
        return "unknown CUDA error";
    return name;
}

/* A handful of (context, image) pairs per process: a small array under one mutex. */
typedef struct {
    unsigned long long ctx_id; /* cuCtxGetId: unique for the process's lifetime */
    const void *image;
    const char *entry;
    CUfunction fn;
    unsigned long long last_use; /* 0: free */
} cache_entry;

enum { CACHE_CAPACITY = 64 };
static cache_entry g_cache[CACHE_CAPACITY];
static unsigned long long g_clock;
static pthread_mutex_t g_cache_lock = PTHREAD_MUTEX_INITIALIZER;

static CUresult load(const gopt_cuda *cu, unsigned long long ctx_id, const void *image, const char *entry,
                     unsigned int shared_bytes, CUfunction *out, const char **what) {
    cache_entry *slot = &g_cache[0];
    for (int i = 0; i < CACHE_CAPACITY; ++i) {
        cache_entry *e = &g_cache[i];
        if (e->last_use && e->ctx_id == ctx_id && e->image == image && strcmp(e->entry, entry) == 0) {
            e->last_use = ++g_clock;
            *out = e->fn;
            return CUDA_SUCCESS;
        }
        if (e->last_use < slot->last_use) slot = e; /* a free slot, else the least recently used */
    }
    CUmodule module;
    CUresult r = cu->cuModuleLoadData(&module, image); /* loads into the current context */
    if (r != CUDA_SUCCESS) {
        *what = "cuModuleLoadData";
        return r;
    }
    CUfunction fn;
    if ((r = cu->cuModuleGetFunction(&fn, module, entry)) != CUDA_SUCCESS) {
        *what = "cuModuleGetFunction";
        return r;
    }
    if (shared_bytes > 48 * 1024 &&
        (r = cu->cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)shared_bytes)) !=
            CUDA_SUCCESS) {
        *what = "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)";
        return r;
    }
    *slot = (cache_entry){ctx_id, image, entry, fn, ++g_clock};
    *out = fn;
    return CUDA_SUCCESS;
}

CUresult gopt_cuda_function(const gopt_cuda *cu, const void *image, const char *entry, unsigned int shared_bytes,
                            CUfunction *out, const char **what) {
    CUcontext ctx = NULL;
    CUresult r = cu->cuCtxGetCurrent(&ctx);
    if (r != CUDA_SUCCESS || !ctx) {
        *what = "cuCtxGetCurrent (no current CUDA context on this thread)";
        return r != CUDA_SUCCESS ? r : CUDA_ERROR_INVALID_CONTEXT;
    }
    unsigned long long ctx_id = 0;
    if ((r = cu->cuCtxGetId(ctx, &ctx_id)) != CUDA_SUCCESS) {
        *what = "cuCtxGetId";
        return r;
    }
    pthread_mutex_lock(&g_cache_lock);
    r = load(cu, ctx_id, image, entry, shared_bytes, out, what);
    pthread_mutex_unlock(&g_cache_lock);
    return r;
}

/*
 * A simulated CUDA driver, libcuda.so.1, for testing libgopt_kernels and the TensorRT
 * plugins on machines without a GPU. Test code only: CMake builds it with
 * -DGOPT_BUILD_SIMGPU=ON into build/simgpu/; nothing of the product links or ships it.
 *
 * It implements the driver entry points libgopt_kernels opens, with the documented
 * behaviour that matters to a launcher (cuda.h of the triton wheel):
 *   - cuInit first (CUDA_ERROR_NOT_INITIALIZED before), one device (ordinal 0) whose
 *     compute capability and opt-in shared memory per block a test sets;
 *   - contexts with unique ids (cuCtxGetId), current per thread; destroying one unloads
 *     its modules, and a context created later may get the same address;
 *   - cuModuleLoadData takes a cubin (ELF, machine EM_CUDA, ABI version 7: e_flags & 0xff is
 *     the SM, 0x800 marks an arch-specific "a" build, which runs on that capability only;
 *     others run on the same major with a minor at least theirs) or NUL-terminated PTX
 *     (.target at most the device's, .version at most the driver's ISA); the function
 *     must be in the image (a cubin's .text.<name> section, PTX's .entry);
 *   - cuLaunchKernel: a function of a module of the current context, a stream of that
 *     context, grid 1 <= x <= 2^31-1, 1 <= y, z <= 65535, block x, y <= 1024, z <= 64,
 *     x*y*z <= 1024, dynamic shared memory above 48 KiB only up to what
 *     cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES) allowed, never above the device's
 *     opt-in maximum.
 * Device memory is host memory. A launch that passes these checks is handed to the test
 * (simcuda_set_launch_callback), which runs it synchronously: nothing is asynchronous.
 * simcuda_fail makes the next calls of a named entry point fail with a given result.
 */
#include <cuda.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIM_EXPORT __attribute__((visibility("default")))

/* The test's side of a launch: returns 0, or a CUresult for cuLaunchKernel to return. */
typedef int (*simcuda_launch_fn)(const void *image, size_t image_size, int is_ptx, const char *entry,
                                 const unsigned int *grid, const unsigned int *block, unsigned int shared_bytes,
                                 unsigned long long ctx_id, void *stream, void **params);

typedef struct sim_ctx {
    int alive;
    unsigned long long id;
} sim_ctx;

typedef struct sim_module {
    struct sim_module *next;
    sim_ctx *ctx;
    unsigned long long ctx_id;
    int alive, is_ptx;
    const unsigned char *image;
    size_t size;
} sim_module;

typedef struct sim_function {
    struct sim_function *next;
    sim_module *module;
    char entry[256];
    int max_dynamic_shared;
} sim_function;

typedef struct sim_stream {
    struct sim_stream *next;
    sim_ctx *ctx;
    unsigned long long ctx_id;
    int alive;
} sim_stream;

enum { MAX_CONTEXTS = 256, MAX_FAILURES = 16, DEFAULT_SHARED = 48 * 1024 };

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_initialised;
static CUresult g_init_result = CUDA_SUCCESS;
static int g_major = 8, g_minor = 0, g_shared_optin = 166912, g_sm_count = 108;
static int g_ptx_isa = 90; /* the newest PTX ISA the simulated driver compiles (.version 9.0) */
static sim_ctx g_contexts[MAX_CONTEXTS];
static unsigned long long g_next_ctx_id = 1;
static sim_module *g_modules;
static sim_function *g_functions;
static sim_stream *g_streams;
static simcuda_launch_fn g_launch;
static __thread sim_ctx *t_current;

static struct {
    char name[64];
    CUresult result;
    int remaining;
} g_failures[MAX_FAILURES];

static struct {
    char name[64];
    long count;
} g_calls[64];

/* Count the call; the result an injected failure asks for, else CUDA_SUCCESS. Under g_lock. */
static CUresult enter(const char *name) {
    for (int i = 0; i < 64; ++i) {
        if (g_calls[i].name[0] == 0) snprintf(g_calls[i].name, sizeof g_calls[i].name, "%s", name);
        if (strcmp(g_calls[i].name, name) == 0) {
            g_calls[i].count++;
            break;
        }
    }
    for (int i = 0; i < MAX_FAILURES; ++i)
        if (g_failures[i].remaining > 0 && strcmp(g_failures[i].name, name) == 0) {
            g_failures[i].remaining--;
            return g_failures[i].result;
        }
    if (!g_initialised && strcmp(name, "cuInit") != 0 && strcmp(name, "cuGetErrorName") != 0)
        return CUDA_ERROR_NOT_INITIALIZED;
    return CUDA_SUCCESS;
}

#define ENTER(name)                              \
    pthread_mutex_lock(&g_lock);                 \
    CUresult r_ = enter(name);                   \
    if (r_ != CUDA_SUCCESS) return unlock(r_)

static CUresult unlock(CUresult r) {
    pthread_mutex_unlock(&g_lock);
    return r;
}

/* ---- test controls ------------------------------------------------------------------------ */

SIM_EXPORT void simcuda_configure(int major, int minor, int shared_optin, int ptx_isa) {
    pthread_mutex_lock(&g_lock);
    g_major = major, g_minor = minor, g_shared_optin = shared_optin, g_ptx_isa = ptx_isa;
    pthread_mutex_unlock(&g_lock);
}

SIM_EXPORT void simcuda_set_init_result(int result) { g_init_result = (CUresult)result; }

SIM_EXPORT void simcuda_set_launch_callback(simcuda_launch_fn fn) { g_launch = fn; }

/* The next `count` calls of entry point `name` return `result`; count 0 clears all. */
SIM_EXPORT void simcuda_fail(const char *name, int result, int count) {
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < MAX_FAILURES; ++i) {
        if (count == 0) {
            g_failures[i].remaining = 0;
        } else if (g_failures[i].remaining == 0) {
            snprintf(g_failures[i].name, sizeof g_failures[i].name, "%s", name);
            g_failures[i].result = (CUresult)result, g_failures[i].remaining = count;
            break;
        }
    }
    pthread_mutex_unlock(&g_lock);
}

/* How often entry point `name` was called. */
SIM_EXPORT long simcuda_calls(const char *name) {
    long n = 0;
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < 64; ++i)
        if (strcmp(g_calls[i].name, name) == 0) n = g_calls[i].count;
    pthread_mutex_unlock(&g_lock);
    return n;
}

/* A new context, current on the calling thread: the first free slot, so a context created
 * after one was destroyed gets its address (as a real driver's allocator may do). */
SIM_EXPORT int simcuda_ctx_create(CUcontext *out) {
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < MAX_CONTEXTS; ++i)
        if (!g_contexts[i].alive) {
            g_contexts[i].alive = 1, g_contexts[i].id = g_next_ctx_id++;
            t_current = &g_contexts[i];
            *out = (CUcontext)&g_contexts[i];
            return unlock(CUDA_SUCCESS);
        }
    return unlock(CUDA_ERROR_OUT_OF_MEMORY);
}

/* Destroys a context: its modules and streams die with it. */
SIM_EXPORT int simcuda_ctx_destroy(CUcontext ctx) {
    sim_ctx *c = (sim_ctx *)ctx;
    pthread_mutex_lock(&g_lock);
    if (!c || !c->alive) return unlock(CUDA_ERROR_INVALID_CONTEXT);
    c->alive = 0;
    for (sim_module *m = g_modules; m; m = m->next)
        if (m->ctx == c) m->alive = 0;
    for (sim_stream *s = g_streams; s; s = s->next)
        if (s->ctx == c) s->alive = 0;
    if (t_current == c) t_current = NULL;
    return unlock(CUDA_SUCCESS);
}

SIM_EXPORT void simcuda_ctx_set_current(CUcontext ctx) { t_current = (sim_ctx *)ctx; }

SIM_EXPORT int simcuda_stream_create(CUstream *out) {
    pthread_mutex_lock(&g_lock);
    if (!t_current || !t_current->alive) return unlock(CUDA_ERROR_INVALID_CONTEXT);
    sim_stream *s = calloc(1, sizeof *s);
    s->ctx = t_current, s->ctx_id = t_current->id, s->alive = 1, s->next = g_streams;
    g_streams = s;
    *out = (CUstream)s;
    return unlock(CUDA_SUCCESS);
}

/* ---- the driver API ----------------------------------------------------------------------- */

SIM_EXPORT CUresult cuInit(unsigned int flags) {
    ENTER("cuInit");
    if (flags != 0) return unlock(CUDA_ERROR_INVALID_VALUE);
    if (g_init_result == CUDA_SUCCESS) g_initialised = 1;
    return unlock(g_init_result);
}

SIM_EXPORT CUresult cuGetErrorName(CUresult error, const char **name) {
    static const struct {
        CUresult r;
        const char *name;
    } names[] = {
#define N(x) {x, #x}
        N(CUDA_SUCCESS), N(CUDA_ERROR_INVALID_VALUE), N(CUDA_ERROR_OUT_OF_MEMORY), N(CUDA_ERROR_NOT_INITIALIZED),
        N(CUDA_ERROR_NO_DEVICE), N(CUDA_ERROR_INVALID_DEVICE), N(CUDA_ERROR_INVALID_IMAGE),
        N(CUDA_ERROR_INVALID_CONTEXT), N(CUDA_ERROR_NO_BINARY_FOR_GPU), N(CUDA_ERROR_INVALID_PTX),
        N(CUDA_ERROR_UNSUPPORTED_PTX_VERSION), N(CUDA_ERROR_INVALID_HANDLE), N(CUDA_ERROR_NOT_FOUND),
        N(CUDA_ERROR_LAUNCH_FAILED), N(CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES), N(CUDA_ERROR_CONTEXT_IS_DESTROYED),
        N(CUDA_ERROR_NOT_SUPPORTED), N(CUDA_ERROR_ILLEGAL_ADDRESS), N(CUDA_ERROR_UNKNOWN),
#undef N
    };
    pthread_mutex_lock(&g_lock);
    enter("cuGetErrorName");
    pthread_mutex_unlock(&g_lock);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; ++i)
        if (names[i].r == error) {
            *name = names[i].name;
            return CUDA_SUCCESS;
        }
    *name = NULL;
    return CUDA_ERROR_INVALID_VALUE;
}

SIM_EXPORT CUresult cuDeviceGet(CUdevice *device, int ordinal) {
    ENTER("cuDeviceGet");
    if (!device) return unlock(CUDA_ERROR_INVALID_VALUE);
    if (ordinal != 0) return unlock(CUDA_ERROR_INVALID_DEVICE);
    *device = 0;
    return unlock(CUDA_SUCCESS);
}

SIM_EXPORT CUresult cuDeviceGetAttribute(int *value, CUdevice_attribute attrib, CUdevice dev) {
    ENTER("cuDeviceGetAttribute");
    if (!value) return unlock(CUDA_ERROR_INVALID_VALUE);
    if (dev != 0) return unlock(CUDA_ERROR_INVALID_DEVICE);
    switch (attrib) {
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *value = g_major; break;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *value = g_minor; break;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *value = g_shared_optin; break;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *value = DEFAULT_SHARED; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: *value = 2147483647; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: *value = 65535; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: *value = 65535; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: *value = 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: *value = 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: *value = 64; break;
        case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *value = 1024; break;
        case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *value = g_sm_count; break;
        default: return unlock(CUDA_ERROR_INVALID_VALUE); /* not simulated: a query the tests should see */
    }
    return unlock(CUDA_SUCCESS);
}

SIM_EXPORT CUresult cuCtxGetCurrent(CUcontext *pctx) {
    ENTER("cuCtxGetCurrent");
    if (!pctx) return unlock(CUDA_ERROR_INVALID_VALUE);
    *pctx = (CUcontext)t_current;
    return unlock(CUDA_SUCCESS);
}

/* The calling thread's current context, or the reason there is none usable. Under g_lock. */
static CUresult current(sim_ctx **out) {
    if (!t_current) return CUDA_ERROR_INVALID_CONTEXT;
    if (!t_current->alive) return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    *out = t_current;
    return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuCtxGetDevice(CUdevice *device) {
    ENTER("cuCtxGetDevice");
    sim_ctx *c;
    CUresult r = current(&c);
    if (r == CUDA_SUCCESS) *device = 0;
    return unlock(r);
}

SIM_EXPORT CUresult cuCtxGetId(CUcontext ctx, unsigned long long *id) {
    ENTER("cuCtxGetId");
    sim_ctx *c = (sim_ctx *)ctx;
    if (!id) return unlock(CUDA_ERROR_INVALID_VALUE);
    if (!c) {
        CUresult r = current(&c);
        if (r != CUDA_SUCCESS) return unlock(r);
    }
    if (!c->alive) return unlock(CUDA_ERROR_CONTEXT_IS_DESTROYED);
    *id = c->id;
    return unlock(CUDA_SUCCESS);
}

static sim_stream *find_stream(CUstream stream) {
    for (sim_stream *s = g_streams; s; s = s->next)
        if ((CUstream)s == stream) return s;
    return NULL;
}

SIM_EXPORT CUresult cuStreamGetCtx(CUstream stream, CUcontext *pctx) {
    ENTER("cuStreamGetCtx");
    if (!pctx) return unlock(CUDA_ERROR_INVALID_VALUE);
    if (!stream) { /* the legacy default stream of the current context */
        sim_ctx *c;
        CUresult r = current(&c);
        if (r == CUDA_SUCCESS) *pctx = (CUcontext)c;
        return unlock(r);
    }
    sim_stream *s = find_stream(stream);
    if (!s || !s->alive) return unlock(CUDA_ERROR_INVALID_HANDLE);
    *pctx = (CUcontext)s->ctx;
    return unlock(CUDA_SUCCESS);
}

/* ---- images ----------------------------------------------------------------------------- */

static int read_u16(const unsigned char *p) { return p[0] | p[1] << 8; }
static uint32_t read_u32(const unsigned char *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t read_u64(const unsigned char *p) { return read_u32(p) | (uint64_t)read_u32(p + 4) << 32; }

/* A cubin for this device: its size, or a CUresult through *r. */
static size_t check_cubin(const unsigned char *img, CUresult *r) {
    if (img[4] != 2 || img[5] != 1 || read_u16(img + 18) != 190 /* EM_CUDA */ || img[8] != 7) {
        *r = CUDA_ERROR_INVALID_IMAGE;
        return 0;
    }
    uint32_t flags = read_u32(img + 48);
    int sm = flags & 0xff, arch_specific = (flags & 0x800) != 0, device = 10 * g_major + g_minor;
    int runs = arch_specific ? sm == device : sm / 10 == g_major && sm <= device;
    if (!runs) {
        *r = CUDA_ERROR_NO_BINARY_FOR_GPU;
        return 0;
    }
    *r = CUDA_SUCCESS;
    /* the end of the section or the program header table, whichever is last */
    uint64_t sections = read_u64(img + 40) + (uint64_t)read_u16(img + 60) * read_u16(img + 58);
    uint64_t segments = read_u64(img + 32) + (uint64_t)read_u16(img + 56) * read_u16(img + 54);
    return (size_t)(sections > segments ? sections : segments);
}

/* NUL-terminated PTX this driver can compile for this device: its size with the NUL. */
static size_t check_ptx(const char *ptx, CUresult *r) {
    int major = 0, minor = 0, sm = 0;
    const char *version = strstr(ptx, "\n.version "), *target = strstr(ptx, "\n.target sm_");
    if (!version || !target || sscanf(version, "\n.version %d.%d", &major, &minor) != 2 ||
        sscanf(target, "\n.target sm_%d", &sm) != 1) {
        *r = CUDA_ERROR_INVALID_IMAGE;
        return 0;
    }
    if (10 * major + minor > g_ptx_isa) {
        *r = CUDA_ERROR_UNSUPPORTED_PTX_VERSION;
        return 0;
    }
    if (sm > 10 * g_major + g_minor || target[12 + (sm >= 100 ? 3 : 2)] == 'a') {
        *r = CUDA_ERROR_INVALID_PTX; /* the JIT compiles for this device only: no newer or "a" target */
        return 0;
    }
    *r = CUDA_SUCCESS;
    return strlen(ptx) + 1;
}

SIM_EXPORT CUresult cuModuleLoadData(CUmodule *module, const void *image) {
    ENTER("cuModuleLoadData");
    sim_ctx *c;
    CUresult r = current(&c);
    if (r != CUDA_SUCCESS) return unlock(r);
    if (!module || !image) return unlock(CUDA_ERROR_INVALID_VALUE);
    const unsigned char *img = image;
    int is_ptx = memcmp(img, "\x7f" "ELF", 4) != 0;
    size_t size = is_ptx ? check_ptx(image, &r) : check_cubin(img, &r);
    if (r != CUDA_SUCCESS) return unlock(r);
    sim_module *m = calloc(1, sizeof *m);
    m->ctx = c, m->ctx_id = c->id, m->alive = 1, m->is_ptx = is_ptx, m->image = img, m->size = size;
    m->next = g_modules, g_modules = m;
    *module = (CUmodule)m;
    return unlock(CUDA_SUCCESS);
}

static sim_module *find_module(CUmodule module) {
    for (sim_module *m = g_modules; m; m = m->next)
        if ((CUmodule)m == module) return m;
    return NULL;
}

static int holds_entry(const sim_module *m, const char *name) {
    char pattern[300];
    if (m->is_ptx) {
        snprintf(pattern, sizeof pattern, ".entry %s(", name);
        return strstr((const char *)m->image, pattern) != NULL;
    }
    int n = snprintf(pattern, sizeof pattern, ".text.%s", name) + 1; /* with its NUL: the whole name */
    return memmem(m->image, m->size, pattern, (size_t)n) != NULL;
}

SIM_EXPORT CUresult cuModuleGetFunction(CUfunction *hfunc, CUmodule hmod, const char *name) {
    ENTER("cuModuleGetFunction");
    sim_module *m = find_module(hmod);
    if (!hfunc || !name) return unlock(CUDA_ERROR_INVALID_VALUE);
    if (!m || !m->alive) return unlock(CUDA_ERROR_INVALID_HANDLE);
    if (strlen(name) >= sizeof ((sim_function *)0)->entry || !holds_entry(m, name))
        return unlock(CUDA_ERROR_NOT_FOUND);
    sim_function *f = calloc(1, sizeof *f);
    f->module = m, f->max_dynamic_shared = DEFAULT_SHARED;
    snprintf(f->entry, sizeof f->entry, "%s", name);
    f->next = g_functions, g_functions = f;
    *hfunc = (CUfunction)f;
    return unlock(CUDA_SUCCESS);
}

/* A live function (its module loaded and its context alive), or NULL. Under g_lock. */
static sim_function *find_function(CUfunction fn) {
    for (sim_function *f = g_functions; f; f = f->next)
        if ((CUfunction)f == fn) return f->module->alive ? f : NULL;
    return NULL;
}

SIM_EXPORT CUresult cuFuncSetAttribute(CUfunction hfunc, CUfunction_attribute attrib, int value) {
    ENTER("cuFuncSetAttribute");
    sim_function *f = find_function(hfunc);
    if (!f) return unlock(CUDA_ERROR_INVALID_HANDLE);
    if (attrib != CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES || value < 0 || value > g_shared_optin)
        return unlock(CUDA_ERROR_INVALID_VALUE);
    f->max_dynamic_shared = value;
    return unlock(CUDA_SUCCESS);
}

SIM_EXPORT CUresult cuLaunchKernel(CUfunction fn, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                                   unsigned int by, unsigned int bz, unsigned int shared, CUstream stream,
                                   void **params, void **extra) {
    ENTER("cuLaunchKernel");
    sim_ctx *c;
    CUresult r = current(&c);
    if (r != CUDA_SUCCESS) return unlock(r);
    sim_function *f = find_function(fn);
    if (!f) return unlock(CUDA_ERROR_INVALID_HANDLE);
    if (f->module->ctx != c || f->module->ctx_id != c->id) return unlock(CUDA_ERROR_INVALID_CONTEXT);
    if (stream) {
        sim_stream *s = find_stream(stream);
        if (!s || !s->alive || s->ctx != c) return unlock(CUDA_ERROR_INVALID_HANDLE);
    }
    if (gx == 0 || gy == 0 || gz == 0 || gx > 2147483647u || gy > 65535 || gz > 65535)
        return unlock(CUDA_ERROR_INVALID_VALUE);
    if (bx == 0 || by == 0 || bz == 0 || bx > 1024 || by > 1024 || bz > 64 || (unsigned long)bx * by * bz > 1024)
        return unlock(CUDA_ERROR_INVALID_VALUE);
    if (shared > (unsigned)g_shared_optin || (shared > DEFAULT_SHARED && shared > (unsigned)f->max_dynamic_shared))
        return unlock(CUDA_ERROR_INVALID_VALUE);
    if (!params || extra) return unlock(CUDA_ERROR_INVALID_VALUE);
    simcuda_launch_fn launch = g_launch;
    const sim_module m = *f->module;
    unsigned long long ctx_id = c->id;
    pthread_mutex_unlock(&g_lock); /* the test's callback runs unlocked: other threads may launch */
    if (!launch) return CUDA_ERROR_LAUNCH_FAILED;
    const unsigned int grid[3] = {gx, gy, gz}, block[3] = {bx, by, bz};
    int result = launch(m.image, m.size, m.is_ptx, f->entry, grid, block, shared, ctx_id, stream, params);
    return result ? (CUresult)result : CUDA_SUCCESS;
}

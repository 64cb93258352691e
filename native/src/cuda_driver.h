/* The CUDA driver API, opened at run time (dlopen "libcuda.so.1"), and a cache of loaded
 * kernels per CUDA context. Internal to libgopt_kernels. */
#ifndef GOPT_CUDA_DRIVER_H
#define GOPT_CUDA_DRIVER_H

#include <stddef.h>

#include <cuda.h>

typedef struct {
    CUresult (*cuInit)(unsigned int);
    CUresult (*cuGetErrorName)(CUresult, const char **);
    CUresult (*cuCtxGetCurrent)(CUcontext *);
    CUresult (*cuCtxGetDevice)(CUdevice *);
    CUresult (*cuCtxGetId)(CUcontext, unsigned long long *);
    CUresult (*cuDeviceGet)(CUdevice *, int);
    CUresult (*cuStreamGetCtx)(CUstream, CUcontext *);
    CUresult (*cuDeviceGetAttribute)(int *, CUdevice_attribute, CUdevice);
    CUresult (*cuModuleLoadData)(CUmodule *, const void *);
    CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
    CUresult (*cuFuncSetAttribute)(CUfunction, CUfunction_attribute, int);
    CUresult (*cuLaunchKernel)(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int, unsigned int,
                               unsigned int, unsigned int, CUstream, void **, void **);
} gopt_cuda;

/* The driver's entry points, opened and initialised once per process; NULL when that
 * failed, with the reason (dlerror / cuInit's error name) copied into why. */
const gopt_cuda *gopt_cuda_driver(char *why, size_t why_size);

/* "CUDA_ERROR_..." for a CUresult. */
const char *gopt_cuda_error_name(const gopt_cuda *cu, CUresult r);

/* The function `entry` of `image` (cubin or NUL-terminated PTX) in the calling thread's
 * current context, loaded on first use and cached per (context id, image): cuCtxGetId's
 * ids are never reused, so a context created where a destroyed one was gets its own
 * modules. The cache holds a bounded number of functions; the least recently used one
 * makes room (its module stays loaded in its context, whose lifetime this library does not
 * control). `shared_bytes` above 48 KiB is enabled on the function once. Returns
 * CUDA_SUCCESS or the failing call's result; `what` then names that call. */
CUresult gopt_cuda_function(const gopt_cuda *cu, const void *image, const char *entry, unsigned int shared_bytes,
                            CUfunction *out, const char **what);

#endif

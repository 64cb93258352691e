/* The embedded kernel builds: one record per cubin or PTX image, generated from the AOT
 * manifest (kernels.aot's manifest.json) by native/embed_kernels.py. Internal. */
#ifndef GOPT_VARIANTS_H
#define GOPT_VARIANTS_H

#include <stdint.h>

enum { GOPT_K_GROUP_MERGE, GOPT_K_GROUP_MERGE_EPILOGUE, GOPT_K_PROMPT_INJECT };

/* Kernel parameters by name (the manifest's signature names). */
enum {
    GOPT_P_a_ptr, GOPT_P_c_ptr, GOPT_P_f_ptr, GOPT_P_P_ptr, GOPT_P_out_ptr,
    GOPT_P_down_w, GOPT_P_down_b, GOPT_P_q_w, GOPT_P_q_b, GOPT_P_k_w, GOPT_P_k_b,
    GOPT_P_v_w, GOPT_P_v_b, GOPT_P_o_w, GOPT_P_o_b, GOPT_P_up_w, GOPT_P_up_b,
    GOPT_P_part_sum_ptr, GOPT_P_part_cnt_ptr, GOPT_P_assign_ptr,
    GOPT_P_S, GOPT_P_C, GOPT_P_D, GOPT_P_split, GOPT_P_inv_sqrt_d,
    GOPT_P_stride_ab, GOPT_P_stride_as, GOPT_P_stride_ad, GOPT_P_stride_cb, GOPT_P_stride_cc, GOPT_P_stride_cd,
    GOPT_P_stride_fb, GOPT_P_stride_fs, GOPT_P_stride_fd, GOPT_P_stride_pb, GOPT_P_stride_pc, GOPT_P_stride_pd,
    GOPT_P_global_scratch, GOPT_P_profile_scratch,
    GOPT_P_COUNT
};

enum { GOPT_T_PTR, GOPT_T_I32, GOPT_T_F32 };

enum { GOPT_MAX_PARAMS = 40 };

typedef struct {
    int kernel;             /* GOPT_K_* */
    int dtype;              /* gopt_dtype */
    int capability;         /* 10 * major + minor the image is built for */
    int arch_specific;      /* an "a" build (sm_90a, ...): runs on exactly that capability */
    int is_ptx;             /* a NUL-terminated PTX image, compiled by the driver at load */
    int d, c_pad;
    int fused;              /* group merge: FUSED_EPILOGUE; -1 for the other kernels */
    int tokens_per_prog;    /* group merge: tokens per program (the split); 0 otherwise */
    const char *arch;       /* "90a", ... */
    const char *entry;      /* kernel symbol in the image */
    const unsigned char *image;
    unsigned int image_size;
    unsigned int block_x;   /* num_warps * 32 */
    unsigned int shared_bytes;
    void (*grid)(int64_t B, int64_t S, unsigned int g[3]);
    int num_params;
    const unsigned char *params;      /* GOPT_P_* in kernel order */
    const unsigned char *param_types; /* GOPT_T_* */
} gopt_variant;

extern const gopt_variant gopt_variants[];
extern const int gopt_variant_count;

#endif

// GoptGroupMerge (namespace gopt, version 1): GoPT's CUP hard group merge (eq. 8-10) as a
// TensorRT IPluginV3, running libgopt_kernels' gopt_group_merge on TensorRT's stream.
//
// Inputs (the fused ONNX node's, see runtime/backends/plugin_ops.py): a' [B, S, d], c' [B, C, d],
// q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b ([d, d] / [d]); output P [B, C, d].
#include "common.h"

namespace gopt {

class GroupMerge : public PluginBase<GroupMerge> {
public:
    static constexpr char const* kName = "GoptGroupMerge";
    static constexpr int kKernel = GOPT_GROUP_MERGE;
    static constexpr int32_t kShapeOf = 1;  // P has c's shape
    static constexpr int32_t kNbInputs = 10;

    size_t getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                            DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override {
        if (nbInputs != kNbInputs || inputs[0].max.nbDims != 3 || inputs[1].max.nbDims != 3) return 0;
        Dims const& a = inputs[0].max;
        Dims const& c = inputs[1].max;
        return gopt_group_merge_workspace_size(a.d[0], a.d[1], c.d[1], c.d[2]);
    }

    // {B, S, C, d, D} of a' [B, S, d] and c' [B, C, d] (D: none).
    static void sizes(Dims const* in, int64_t s[5]) {
        s[0] = in[0].d[0], s[1] = in[0].d[1], s[2] = in[1].d[1], s[3] = in[0].d[2], s[4] = -1;
    }

    using PluginBase::check;
    bool check(Dims const* in) const {
        if (in[0].nbDims != 3 || in[1].nbDims != 3) {
            report(kName, "a and c must be rank 3: [B, S, d] and [B, C, d]");
            return false;
        }
        int64_t const d = in[0].d[2];
        bool ok = shape("c", in[1], {in[0].d[0], -1, d});
        for (int32_t i = 2; i < kNbInputs; i += 2) {
            ok = ok && shape("a projection weight", in[i], {d, d});
            ok = ok && shape("a projection bias", in[i + 1], {d});
        }
        return ok;
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc, void const* const* inputs,
                    void* const* outputs, void* workspace, cudaStream_t stream) noexcept override {
        Dims const& a = inputDesc[0].dims;
        Dims const& c = inputDesc[1].dims;
        gopt_group_merge_args args{};
        args.size = sizeof args;
        args.dtype = goptDtype(inputDesc[0].type);
        args.B = a.d[0], args.S = a.d[1], args.C = c.d[1], args.d = c.d[2];
        args.a = inputs[0];
        contiguousStrides(a, args.a_strides);
        args.c = inputs[1];
        contiguousStrides(c, args.c_strides);
        args.q_w = inputs[2], args.q_b = inputs[3], args.k_w = inputs[4], args.k_b = inputs[5];
        args.v_w = inputs[6], args.v_b = inputs[7], args.o_w = inputs[8], args.o_b = inputs[9];
        args.out = outputs[0];
        size_t const ws = gopt_group_merge_workspace_size(args.B, args.S, args.C, args.d);
        int const status = gopt_group_merge(&args, workspace, ws, reinterpret_cast<gopt_stream>(stream));
        if (status != GOPT_OK) report(kName, gopt_last_error());
        return status;
    }
};

IPluginCreatorInterface* groupMergeCreator() {
    static Creator<GroupMerge> creator;
    return &creator;
}

}  // namespace gopt

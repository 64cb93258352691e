// GoptPromptInject (namespace gopt, version 1): GoPT's ACP cross-attention and prompt
// injection (eq. 11-14, 3) as a TensorRT IPluginV3, running libgopt_kernels'
// gopt_prompt_inject on TensorRT's stream.
//
// Inputs (the fused ONNX node's, see runtime/backends/plugin_ops.py): f [B, S, D], P [B, C, d],
// down_w [d, D], down_b [d], q/k/v/o weights [d, d] and biases [d], up_w [D, d], up_b [D];
// output f * (1 + up(p)) [B, S, D].
#include "common.h"

namespace gopt {

class PromptInject : public PluginBase<PromptInject> {
public:
    static constexpr char const* kName = "GoptPromptInject";
    static constexpr int kKernel = GOPT_PROMPT_INJECT;
    static constexpr int32_t kShapeOf = 0;  // the output has f's shape
    static constexpr int32_t kNbInputs = 14;

    // {B, S, C, d, D} of f [B, S, D] and P [B, C, d].
    static void sizes(Dims const* in, int64_t s[5]) {
        s[0] = in[0].d[0], s[1] = in[0].d[1], s[2] = in[1].d[1], s[3] = in[1].d[2], s[4] = in[0].d[2];
    }

    using PluginBase::check;
    bool check(Dims const* in) const {
        if (in[0].nbDims != 3 || in[1].nbDims != 3) {
            report(kName, "f and P must be rank 3: [B, S, D] and [B, C, d]");
            return false;
        }
        int64_t const D = in[0].d[2], d = in[1].d[2];
        bool ok = shape("P", in[1], {in[0].d[0], -1, d});
        ok = ok && shape("down_w", in[2], {d, D}) && shape("down_b", in[3], {d});
        for (int32_t i = 4; i < 12; i += 2) {
            ok = ok && shape("a projection weight", in[i], {d, d});
            ok = ok && shape("a projection bias", in[i + 1], {d});
        }
        return ok && shape("up_w", in[12], {D, d}) && shape("up_b", in[13], {D});
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc, void const* const* inputs,
                    void* const* outputs, void* workspace, cudaStream_t stream) noexcept override {
        Dims const& f = inputDesc[0].dims;
        Dims const& P = inputDesc[1].dims;
        gopt_prompt_inject_args args{};
        args.size = sizeof args;
        args.dtype = goptDtype(inputDesc[0].type);
        args.B = f.d[0], args.S = f.d[1], args.D = f.d[2], args.C = P.d[1], args.d = P.d[2];
        args.f = inputs[0];
        contiguousStrides(f, args.f_strides);
        args.P = inputs[1];
        contiguousStrides(P, args.P_strides);
        args.down_w = inputs[2], args.down_b = inputs[3];
        args.q_w = inputs[4], args.q_b = inputs[5], args.k_w = inputs[6], args.k_b = inputs[7];
        args.v_w = inputs[8], args.v_b = inputs[9], args.o_w = inputs[10], args.o_b = inputs[11];
        args.up_w = inputs[12], args.up_b = inputs[13];
        args.out = outputs[0];
        int const status = gopt_prompt_inject(&args, reinterpret_cast<gopt_stream>(stream));
        if (status != GOPT_OK) report(kName, gopt_last_error());
        return status;
    }
};

IPluginCreatorInterface* promptInjectCreator() {
    static Creator<PromptInject> creator;
    return &creator;
}

}  // namespace gopt

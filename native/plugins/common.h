// What the two GoPT TensorRT plugins share: the IPluginV3 boilerplate (capabilities, name,
// version, namespace, data types, formats, serialised fields) and the creator. Each
// plugin's own file holds its shapes, checks, workspace and enqueue.
//
// Built against the TensorRT 10.x and 11.x headers alike: it only implements TensorRT's
// interfaces and never calls into TensorRT (no logger calls: ILogger's vtable differs
// between 10.x and 11.x), so one binary loads into either. Errors are printed to stderr.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "gopt_kernels.h"

namespace gopt {

using namespace nvinfer1;

constexpr char const* kNamespace = "gopt";
constexpr char const* kVersion = "1";
// The single serialised field: the layout of this plugin's attributes (none today).
constexpr char const* kFormatField = "format";
constexpr int32_t kFormat = 1;

inline void report(char const* plugin, char const* what) { std::fprintf(stderr, "[%s] %s\n", plugin, what); }

// gopt_dtype of a TensorRT type, -1 for types the kernels do not take.
inline int32_t goptDtype(DataType t) {
    switch (t) {
        case DataType::kFLOAT: return GOPT_FLOAT32;
        case DataType::kHALF: return GOPT_FLOAT16;
        case DataType::kBF16: return GOPT_BFLOAT16;
        default: return -1;  // TensorRT 11 adds types (kFP4, kE8M0, ...): none is ours
    }
}

// Element strides of a contiguous (kLINEAR) rank-3 tensor.
inline void contiguousStrides(Dims const& d, int64_t strides[3]) {
    strides[2] = 1;
    strides[1] = d.d[2];
    strides[0] = d.d[1] * d.d[2];
}

// Shared IPluginV3 implementation; Derived provides kName, kKernel (gopt_kernel),
// kNbInputs, kShapeOf, check() (shapes agree), sizes() ({B, S, C, d, D} of the inputs),
// enqueue() and, for a workspace, getWorkspaceSize(). What the library cannot run on this
// GPU (a dtype or C it has no build for, d or C out of range, sizes beyond int32 or the
// grid limits) is refused at build time: by supportsFormatCombination for the dtype, by
// configurePlugin for the sizes, at the profile's maximum (gopt_can_run).
template <class Derived>
class PluginBase : public IPluginV3, public IPluginV3OneCore, public IPluginV3OneBuild, public IPluginV3OneRuntime {
public:
    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
        switch (type) {
            case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
            case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
            case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    IPluginV3* clone() noexcept override {
        try {
            return new Derived(static_cast<Derived const&>(*this));
        } catch (...) {
            return nullptr;
        }
    }

    AsciiChar const* getPluginName() const noexcept override { return Derived::kName; }
    AsciiChar const* getPluginVersion() const noexcept override { return kVersion; }
    AsciiChar const* getPluginNamespace() const noexcept override { return kNamespace; }

    int32_t getNbOutputs() const noexcept override { return 1; }

    // The output has the shape of input Derived::kShapeOf (batch stays symbolic).
    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* shapeInputs,
                            int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs,
                            IExprBuilder& exprBuilder) noexcept override {
        if (nbInputs != Derived::kNbInputs || nbOutputs != 1 || inputs[Derived::kShapeOf].nbDims != 3) return -1;
        outputs[0] = inputs[Derived::kShapeOf];
        return 0;
    }

    int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                               int32_t nbInputs) const noexcept override {
        if (nbOutputs != 1 || nbInputs != Derived::kNbInputs) return -1;
        outputTypes[0] = inputTypes[0];
        return 0;
    }

    // Linear, every tensor the type of input 0, which must be a dtype the library has a
    // build of for this GPU (and input 1's C and d, when known).
    bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override {
        if (nbInputs != Derived::kNbInputs || nbOutputs != 1 || pos < 0 || pos >= nbInputs + nbOutputs)
            return false;
        PluginTensorDesc const& desc = inOut[pos].desc;
        if (desc.format != TensorFormat::kLINEAR || goptDtype(desc.type) < 0) return false;
        if (pos > 0) return desc.type == inOut[0].desc.type;
        Dims const& groups = inOut[1].desc.dims;  // [B, C, d] for both plugins
        bool known = groups.nbDims == 3;
        int64_t const C = known && groups.d[1] > 0 ? groups.d[1] : -1, d = known && groups.d[2] > 0 ? groups.d[2] : -1;
        return gopt_can_run(Derived::kKernel, goptDtype(desc.type), -1, -1, C, d, -1) == GOPT_OK;
    }

    // Shapes that agree, and sizes up to the profile's maximum the library runs on this GPU.
    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out,
                            int32_t nbOutputs) noexcept override {
        if (nbInputs != Derived::kNbInputs || nbOutputs != 1) return -1;
        std::vector<Dims> dims(nbInputs), max(nbInputs);
        for (int32_t i = 0; i < nbInputs; ++i) dims[i] = in[i].desc.dims, max[i] = in[i].max;
        return static_cast<Derived*>(this)->check(dims.data()) && check(in[0].desc.type, max.data()) ? 0 : -1;
    }

    int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out,
                          int32_t nbOutputs) noexcept override {
        if (nbInputs != Derived::kNbInputs || nbOutputs != 1) return -1;
        std::vector<Dims> dims(nbInputs);
        for (int32_t i = 0; i < nbInputs; ++i) dims[i] = in[i].dims;
        return check(in[0].type, dims.data()) ? 0 : -1;
    }

    // One plugin object per execution context; the plugins hold no device state.
    IPluginV3* attachToContext(IPluginResourceContext* context) noexcept override { return clone(); }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override {
        mFields = PluginField(kFormatField, &kFormat, PluginFieldType::kINT32, 1);
        mCollection.nbFields = 1;
        mCollection.fields = &mFields;
        return &mCollection;
    }

protected:
    // The shapes agree (Derived::check) and the library can run these sizes (-1: any).
    bool check(DataType type, Dims const* dims) const {
        auto const& self = static_cast<Derived const&>(*this);
        if (!self.check(dims)) return false;
        int64_t s[5];
        self.sizes(dims, s);
        for (int64_t& v : s) v = v < 0 ? -1 : v;
        if (gopt_can_run(Derived::kKernel, goptDtype(type), s[0], s[1], s[2], s[3], s[4]) == GOPT_OK) return true;
        report(Derived::kName, gopt_last_error());
        return false;
    }

    // Does `d` have the dimensions `want` (-1 and dynamic dimensions match anything)?
    static bool shape(char const* what, Dims const& d, std::vector<int64_t> const& want) {
        bool ok = d.nbDims == static_cast<int32_t>(want.size());
        for (size_t i = 0; ok && i < want.size(); ++i) ok = d.d[i] == want[i] || d.d[i] < 0 || want[i] < 0;
        if (!ok) {
            std::string msg = std::string(what) + " must have shape [";
            for (size_t i = 0; i < want.size(); ++i) msg += (i ? ", " : "") + std::to_string(want[i]);
            msg += "], got [";
            for (int32_t i = 0; i < d.nbDims; ++i) msg += (i ? ", " : "") + std::to_string(d.d[i]);
            report(Derived::kName, (msg + "]").c_str());
        }
        return ok;
    }

private:
    PluginField mFields;
    PluginFieldCollection mCollection{};
};

// The creator of plugin P: attributes of the ONNX node (none besides the parser's own
// plugin_namespace / plugin_version) at build time, the serialised "format" field at run time.
template <class P>
class Creator : public IPluginCreatorV3One {
public:
    Creator() {
        mField = PluginField(kFormatField, nullptr, PluginFieldType::kINT32, 1);
        mCollection.nbFields = 1;
        mCollection.fields = &mField;
    }

    IPluginV3* createPlugin(AsciiChar const* name, PluginFieldCollection const* fc, TensorRTPhase phase) noexcept
        override {
        for (int32_t i = 0; fc && i < fc->nbFields; ++i) {
            PluginField const& f = fc->fields[i];
            if (f.name && std::strcmp(f.name, kFormatField) == 0 && f.type == PluginFieldType::kINT32 && f.data &&
                *static_cast<int32_t const*>(f.data) != kFormat) {
                std::string msg = "serialised with format " + std::to_string(*static_cast<int32_t const*>(f.data)) +
                                  ", this library reads " + std::to_string(kFormat) + ": rebuild the engine";
                report(P::kName, msg.c_str());
                return nullptr;
            }
        }
        try {
            return new P();
        } catch (...) {
            return nullptr;
        }
    }

    PluginFieldCollection const* getFieldNames() noexcept override { return &mCollection; }
    AsciiChar const* getPluginName() const noexcept override { return P::kName; }
    AsciiChar const* getPluginVersion() const noexcept override { return kVersion; }
    AsciiChar const* getPluginNamespace() const noexcept override { return kNamespace; }

private:
    PluginField mField;
    PluginFieldCollection mCollection{};
};

}  // namespace gopt

// TensorRT's side of IPluginV3, played for the tests: loads a plugin library the way
// IPluginRegistry::loadLibrary does (dlopen, getCreators) and makes the calls a builder and
// an execution context make, one C function per call, so that pytest drives it through
// ctypes and checks the answers. Test code only (CMake builds it with
// -DGOPT_BUILD_SIMGPU=ON, once per TensorRT header set); it never runs TensorRT itself.
//
// Tensors are described by arrays: types[i] (DataType values), formats[i] (TensorFormat
// values) and dims[4 * i ...] = {nbDims, d0, d1, d2} with -1 for a dynamic dimension.
// getOutputShapes gets stand-in dimension expressions: a constant for a known dimension,
// a symbolic one (no constant value) for -1.
#include <NvInferRuntime.h>

#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

using namespace nvinfer1;

#define HOST_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

std::vector<IPluginCreatorInterface*> gCreators;

// ---- stand-in dimension expressions ------------------------------------------------------------

class DimValue : public apiv::VDimensionExpr {
public:
    explicit DimValue(int64_t v) : mValue(v) {}
    bool isConstant() const override { return mValue >= 0; }
    int64_t getConstantValue() const override {
        return mValue >= 0 ? mValue : std::numeric_limits<int64_t>::min();
    }
    bool isSizeTensor() const override { return false; }

private:
    int64_t mValue;
};

class Expr : public IDimensionExpr {
public:
    explicit Expr(int64_t v) : mValue(v) { mImpl = &mValue; }
    ~Expr() override = default;

private:
    DimValue mValue;
};

// Constants fold; anything with a symbolic operand stays symbolic.
class ExprValues : public apiv::VExprBuilder {
public:
    IDimensionExpr const* constant(int64_t value) override { return make(value); }
    IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& a, IDimensionExpr const& b) override {
        if (!a.isConstant() || !b.isConstant()) return make(-1);
        int64_t x = a.getConstantValue(), y = b.getConstantValue();
        switch (op) {
            case DimensionOperation::kSUM: return make(x + y);
            case DimensionOperation::kPROD: return make(x * y);
            case DimensionOperation::kMAX: return make(x > y ? x : y);
            case DimensionOperation::kMIN: return make(x < y ? x : y);
            case DimensionOperation::kSUB: return make(x - y);
            case DimensionOperation::kEQUAL: return make(x == y);
            case DimensionOperation::kLESS: return make(x < y);
            case DimensionOperation::kFLOOR_DIV: return make(y ? x / y : -1);
            case DimensionOperation::kCEIL_DIV: return make(y ? (x + y - 1) / y : -1);
        }
        return make(-1);
    }
    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override {
        return make(-1);
    }
    Expr const* make(int64_t v) {
        mOwned.emplace_back(new Expr(v));
        return mOwned.back().get();
    }

private:
    std::vector<std::unique_ptr<Expr>> mOwned;
};

class ExprBuilder : public IExprBuilder {
public:
    ExprBuilder() { mImpl = &mValues; }
    ~ExprBuilder() override = default;
    Expr const* make(int64_t v) { return mValues.make(v); }

private:
    ExprValues mValues;
};

// attachToContext's argument: no allocator, no error recorder (the plugins use neither).
class ResourceContext : public IPluginResourceContext {
public:
    IGpuAllocator* getGpuAllocator() const noexcept override { return nullptr; }
    IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
};

// ---- descriptors --------------------------------------------------------------------------------

Dims toDims(int64_t const* d) {
    Dims out{};
    out.nbDims = static_cast<int32_t>(d[0]);
    for (int32_t i = 0; i < out.nbDims && i < 3; ++i) out.d[i] = d[1 + i];
    return out;
}

PluginTensorDesc toDesc(int i, int const* types, int const* formats, int64_t const* dims) {
    PluginTensorDesc desc{};
    desc.dims = toDims(dims + 4 * i);
    desc.type = static_cast<DataType>(types[i]);
    desc.format = formats ? static_cast<TensorFormat>(formats[i]) : TensorFormat::kLINEAR;
    desc.scale = 1.0F;
    return desc;
}

std::vector<DynamicPluginTensorDesc> dynamicDescs(int n, int const* types, int const* formats, int64_t const* min,
                                                  int64_t const* opt, int64_t const* max) {
    std::vector<DynamicPluginTensorDesc> out(n);
    for (int i = 0; i < n; ++i) {
        out[i].desc = toDesc(i, types, formats, max);
        for (int32_t k = 0; k < out[i].desc.dims.nbDims; ++k)  // as at build time: -1 where the profile varies
            if (min[4 * i + 1 + k] != max[4 * i + 1 + k]) out[i].desc.dims.d[k] = -1;
        out[i].min = toDims(min + 4 * i);
        out[i].opt = toDims(opt + 4 * i);
        out[i].max = toDims(max + 4 * i);
    }
    return out;
}

IPluginV3OneCore* core(IPluginV3* p) {
    return static_cast<IPluginV3OneCore*>(p->getCapabilityInterface(PluginCapabilityType::kCORE));
}
IPluginV3OneBuild* build(IPluginV3* p) {
    return static_cast<IPluginV3OneBuild*>(p->getCapabilityInterface(PluginCapabilityType::kBUILD));
}
IPluginV3OneRuntime* runtime(IPluginV3* p) {
    return static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
}

IPluginCreatorV3One* findCreator(char const* name, char const* ns) {
    for (auto* c : gCreators) {
        auto* v3 = static_cast<IPluginCreatorV3One*>(c);
        if (std::strcmp(v3->getPluginName(), name) == 0 && std::strcmp(v3->getPluginNamespace(), ns) == 0) return v3;
    }
    return nullptr;
}

void copy(char* out, size_t n, std::string const& s) { std::snprintf(out, n, "%s", s.c_str()); }

std::string fieldsText(PluginFieldCollection const* fc, bool values) {
    std::string s;
    for (int32_t i = 0; fc && i < fc->nbFields; ++i) {
        PluginField const& f = fc->fields[i];
        s += (i ? ";" : "") + std::string(f.name ? f.name : "?") + ":" + std::to_string(static_cast<int>(f.type)) +
             ":" + std::to_string(f.length);
        if (values && f.type == PluginFieldType::kINT32 && f.data && f.length == 1)
            s += "=" + std::to_string(*static_cast<int32_t const*>(f.data));
    }
    return s;
}

}  // namespace

// ---- loading ------------------------------------------------------------------------------------

// TensorRT's version these headers are ("10.3.0"), for the test's report.
HOST_EXPORT void host_tensorrt_version(char* out, size_t n) {
    copy(out, n, std::to_string(NV_TENSORRT_MAJOR) + "." + std::to_string(NV_TENSORRT_MINOR) + "." +
                     std::to_string(NV_TENSORRT_PATCH));
}

// Number of values of DataType (which 0) or TensorFormat (which 1) in these headers.
HOST_EXPORT int host_enum_count(int which) { return which == 0 ? EnumMax<DataType>() : EnumMax<TensorFormat>(); }

// dlopen the plugin library and list its creators as TensorRT does; -1 with dlerror in err.
HOST_EXPORT int host_open(char const* path, char* err, size_t n) {
    void* lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) return copy(err, n, dlerror()), -1;
    using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
    auto get = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
    if (!get) return copy(err, n, "no getCreators"), -1;
    int32_t count = 0;
    IPluginCreatorInterface* const* creators = get(count);
    gCreators.assign(creators, creators + count);
    return count;
}

// "interface kind|major.minor|name|version|namespace|fields" of creator i.
HOST_EXPORT int host_creator(int i, char* out, size_t n) {
    if (i < 0 || i >= static_cast<int>(gCreators.size())) return -1;
    InterfaceInfo info = gCreators[i]->getInterfaceInfo();
    std::string s = std::string(info.kind) + "|" + std::to_string(info.major) + "." + std::to_string(info.minor);
    auto* c = static_cast<IPluginCreatorV3One*>(gCreators[i]);
    s += std::string("|") + c->getPluginName() + "|" + c->getPluginVersion() + "|" + c->getPluginNamespace() + "|" +
         fieldsText(c->getFieldNames(), false);
    copy(out, n, s);
    return 0;
}

// createPlugin(name) of the creator (name, ns) in phase 0 (build) or 1 (runtime), with one
// INT32 field "format" = format unless format < 0 (no fields, as the ONNX parser passes).
HOST_EXPORT IPluginV3* host_create(char const* name, char const* ns, int phase, int format) {
    IPluginCreatorV3One* c = findCreator(name, ns);
    if (!c) return nullptr;
    int32_t value = format;
    PluginField field("format", &value, PluginFieldType::kINT32, 1);
    PluginFieldCollection fc{format < 0 ? 0 : 1, &field};
    return c->createPlugin("node", &fc, phase ? TensorRTPhase::kRUNTIME : TensorRTPhase::kBUILD);
}

// What an engine stores (getFieldsToSerialize, copied) re-created in the runtime phase;
// `fields` receives "name:type:length=value;...".
HOST_EXPORT IPluginV3* host_recreate(IPluginV3* p, char* fields, size_t n) {
    IPluginV3OneCore* c = core(p);
    PluginFieldCollection const* fc = runtime(p)->getFieldsToSerialize();
    if (!fc) return nullptr;
    copy(fields, n, fieldsText(fc, true));
    std::vector<std::string> names;
    std::vector<std::vector<char>> data;
    for (int32_t i = 0; i < fc->nbFields; ++i) {
        names.emplace_back(fc->fields[i].name);
        char const* bytes = static_cast<char const*>(fc->fields[i].data);
        size_t size = fc->fields[i].type == PluginFieldType::kINT32 ? 4 * fc->fields[i].length : fc->fields[i].length;
        data.emplace_back(bytes, bytes + size);
    }
    std::vector<PluginField> stored;
    for (int32_t i = 0; i < fc->nbFields; ++i)
        stored.emplace_back(names[i].c_str(), data[i].data(), fc->fields[i].type, fc->fields[i].length);
    PluginFieldCollection copyFc{static_cast<int32_t>(stored.size()), stored.data()};
    IPluginCreatorV3One* creator = findCreator(c->getPluginName(), c->getPluginNamespace());
    return creator ? creator->createPlugin("node", &copyFc, TensorRTPhase::kRUNTIME) : nullptr;
}

// "name|version|namespace|nbOutputs|core kind major|build kind major|runtime kind major".
HOST_EXPORT int host_describe(IPluginV3* p, char* out, size_t n) {
    IPluginV3OneCore* c = core(p);
    IPluginV3OneBuild* b = build(p);
    IPluginV3OneRuntime* r = runtime(p);
    if (!c || !b || !r) return -1;
    auto kind = [](IPluginCapability* cap) {
        InterfaceInfo i = cap->getInterfaceInfo();
        return std::string(i.kind) + " " + std::to_string(i.major);
    };
    copy(out, n, std::string(c->getPluginName()) + "|" + c->getPluginVersion() + "|" + c->getPluginNamespace() + "|" +
                     std::to_string(b->getNbOutputs()) + "|" + kind(c) + "|" + kind(b) + "|" + kind(r));
    return 0;
}

HOST_EXPORT IPluginV3* host_clone(IPluginV3* p) { return p->clone(); }

HOST_EXPORT IPluginV3* host_attach(IPluginV3* p) {
    ResourceContext context;
    return runtime(p)->attachToContext(&context);
}

HOST_EXPORT void host_destroy(IPluginV3* p) { delete p; }

// ---- build phase --------------------------------------------------------------------------------

HOST_EXPORT int host_output_type(IPluginV3* p, int nin, int const* types, int* out) {
    std::vector<DataType> in(nin);
    for (int i = 0; i < nin; ++i) in[i] = static_cast<DataType>(types[i]);
    DataType t = DataType::kINT8;
    int status = build(p)->getOutputDataTypes(&t, 1, in.data(), nin);
    *out = static_cast<int>(t);
    return status;
}

// getOutputShapes; out = {nbDims, values (-1 symbolic)}, origin[k] = 4 * input + dim of the
// input expression output dim k is, or -1 for a new expression.
HOST_EXPORT int host_output_shape(IPluginV3* p, int nin, int64_t const* dims, int64_t* out, int* origin) {
    ExprBuilder builder;
    std::vector<DimsExprs> in(nin);
    for (int i = 0; i < nin; ++i) {
        in[i].nbDims = static_cast<int32_t>(dims[4 * i]);
        for (int32_t k = 0; k < in[i].nbDims; ++k) in[i].d[k] = builder.make(dims[4 * i + 1 + k]);
    }
    DimsExprs result{};
    int status = build(p)->getOutputShapes(in.data(), nin, nullptr, 0, &result, 1, builder);
    out[0] = result.nbDims;
    for (int32_t k = 0; k < result.nbDims && k < 3; ++k) {
        out[1 + k] = result.d[k] && result.d[k]->isConstant() ? result.d[k]->getConstantValue() : -1;
        origin[k] = -1;
        for (int i = 0; i < nin; ++i)
            for (int32_t j = 0; j < in[i].nbDims; ++j)
                if (in[i].d[j] == result.d[k]) origin[k] = 4 * i + j;
    }
    return status;
}

// supportsFormatCombination(pos) over nin inputs and one output (dims: as at build time).
HOST_EXPORT int host_supports(IPluginV3* p, int pos, int nin, int const* types, int const* formats,
                              int64_t const* dims) {
    auto descs = dynamicDescs(nin + 1, types, formats, dims, dims, dims);
    for (int i = 0; i <= nin; ++i) descs[i].desc.dims = toDims(dims + 4 * i);
    return build(p)->supportsFormatCombination(pos, descs.data(), nin, 1) ? 1 : 0;
}

HOST_EXPORT int host_configure(IPluginV3* p, int nin, int const* types, int64_t const* min, int64_t const* opt,
                               int64_t const* max) {
    auto descs = dynamicDescs(nin + 1, types, nullptr, min, opt, max);
    return build(p)->configurePlugin(descs.data(), nin, descs.data() + nin, 1);
}

HOST_EXPORT size_t host_workspace(IPluginV3* p, int nin, int const* types, int64_t const* min, int64_t const* max) {
    auto descs = dynamicDescs(nin + 1, types, nullptr, min, max, max);
    return build(p)->getWorkspaceSize(descs.data(), nin, descs.data() + nin, 1);
}

// ---- runtime --------------------------------------------------------------------------------------

HOST_EXPORT int host_shape_change(IPluginV3* p, int nin, int const* types, int64_t const* dims) {
    std::vector<PluginTensorDesc> descs;
    for (int i = 0; i <= nin; ++i) descs.push_back(toDesc(i, types, nullptr, dims));
    return runtime(p)->onShapeChange(descs.data(), nin, descs.data() + nin, 1);
}

HOST_EXPORT int host_enqueue(IPluginV3* p, int nin, int const* types, int64_t const* dims, void const* const* inputs,
                             void* output, void* workspace, void* stream) {
    std::vector<PluginTensorDesc> descs;
    for (int i = 0; i <= nin; ++i) descs.push_back(toDesc(i, types, nullptr, dims));
    void* outputs[] = {output};
    return runtime(p)->enqueue(descs.data(), descs.data() + nin, inputs, outputs, workspace,
                               reinterpret_cast<cudaStream_t>(stream));
}

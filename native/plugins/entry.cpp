// The entry points TensorRT looks up in a plugin library: IPluginRegistry::loadLibrary
// (trtexec --dynamicPlugins, Python's get_plugin_registry().load_library) calls
// getCreators for IPluginV3 creators and setLoggerFinder when present.
#include "common.h"

namespace gopt {
IPluginCreatorInterface* groupMergeCreator();
IPluginCreatorInterface* promptInjectCreator();
}  // namespace gopt

extern "C" {

__attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
    static nvinfer1::IPluginCreatorInterface* const creators[] = {gopt::groupMergeCreator(),
                                                                  gopt::promptInjectCreator()};
    nbCreators = 2;
    return creators;
}

// TensorRT hands over its logger finder. The plugins keep to stderr instead: ILogger's
// layout differs between TensorRT 10.x and 11.x, and a call through the wrong one would
// crash one of them.
__attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder) { (void)finder; }

}  // extern "C"

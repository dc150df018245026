// foveate::Engine over executorch::extension::Module (the wheel's libexecutorch.so); see engine.h.
#include "engine.h"

#include <sys/stat.h>

#include <algorithm>
#include <sstream>

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/platform/runtime.h>

namespace foveate {

using executorch::aten::ScalarType;
using executorch::extension::Module;
using executorch::runtime::Error;
using executorch::runtime::EValue;

namespace {

std::string error_text(Error e) {
  std::ostringstream s;
  s << executorch::runtime::to_string(e) << " (error " << static_cast<int>(e) << ")";
  return s.str();
}

std::string dims(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

const char* dtype_name(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return "float32";
    case ScalarType::Long: return "int64";
    case ScalarType::Int: return "int32";
    case ScalarType::Half: return "float16";
    case ScalarType::Bool: return "bool";
    default: return "another dtype";
  }
}

}  // namespace

int64_t HostTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string HostTensor::describe() const {
  return std::string(dtype == DType::Float32 ? "float32" : "int64") + dims(shape);
}

Engine::Engine(const std::string& pte_path) : path_(pte_path) {
  executorch::runtime::runtime_init();
  struct stat st {};
  if (stat(pte_path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    throw EngineError(pte_path + ": no such file");
  }
  // No shared memory arenas: each method gets memory of its own, as on the phone.
  module_ = std::make_unique<Module>(pte_path, Module::LoadMode::File, nullptr, nullptr, nullptr, false);
  Error e = module_->load(executorch::runtime::Program::Verification::InternalConsistency);
  if (e != Error::Ok) {
    throw EngineError(pte_path + ": ExecuTorch cannot load the program: " + error_text(e)
                      + " (a truncated or foreign file?)");
  }
  auto names = module_->method_names();
  if (!names.ok()) throw EngineError(pte_path + ": cannot list methods: " + error_text(names.error()));
  methods_.assign(names->begin(), names->end());
  std::sort(methods_.begin(), methods_.end());
  for (const auto& m : methods_) {
    Error le = module_->load_method(m);
    if (le != Error::Ok) {
      throw EngineError(pte_path + ": ExecuTorch cannot load method " + m + ": " + error_text(le)
                        + " (a missing kernel, e.g. quantized ops not linked, or a truncated file)");
    }
  }
}

Engine::~Engine() = default;

std::vector<std::string> Engine::method_names() const { return methods_; }

void Engine::check_inputs(const std::string& method, const std::vector<HostTensor>& inputs) {
  if (std::find(methods_.begin(), methods_.end(), method) == methods_.end()) {
    std::string have;
    for (const auto& m : methods_) have += (have.empty() ? "" : ", ") + m;
    throw EngineError("the program has no method '" + method + "'; it has " + have);
  }
  auto meta = module_->method_meta(method);
  if (!meta.ok()) throw EngineError(method + ": no metadata: " + error_text(meta.error()));
  if (meta->num_inputs() != inputs.size()) {
    throw EngineError(method + ": expected " + std::to_string(meta->num_inputs()) + " inputs, got "
                      + std::to_string(inputs.size()));
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    auto info = meta->input_tensor_meta(i);
    if (!info.ok()) throw EngineError(method + ": input " + std::to_string(i) + " is not a tensor");
    auto sizes = info->sizes();
    std::vector<int64_t> declared(sizes.begin(), sizes.end());
    const HostTensor& t = inputs[i];
    ScalarType want = info->scalar_type();
    bool ok = (want == ScalarType::Float && t.dtype == HostTensor::DType::Float32)
              || (want == ScalarType::Long && t.dtype == HostTensor::DType::Int64);
    ok = ok && declared.size() == t.shape.size();
    for (size_t d = 0; ok && d < declared.size(); ++d) {
      ok = t.shape[d] >= 1 && t.shape[d] <= declared[d];  // dynamic dims: the declared size is the bound
    }
    size_t have = t.dtype == HostTensor::DType::Float32 ? t.floats.size() : t.longs.size();
    if (!ok || static_cast<int64_t>(have) != t.numel()) {
      throw EngineError(method + " input " + std::to_string(i) + ": expected " + dtype_name(want)
                        + dims(declared) + " (dims at most), got " + t.describe());
    }
  }
}

std::vector<HostTensor> Engine::run(const std::string& method, const std::vector<HostTensor>& inputs) {
  check_inputs(method, inputs);
  std::vector<executorch::extension::TensorPtr> keep;  // alive until execute returns: inputs are not copied
  std::vector<EValue> values;
  for (const auto& t : inputs) {
    std::vector<executorch::aten::SizesType> sizes(t.shape.begin(), t.shape.end());
    void* data = t.dtype == HostTensor::DType::Float32 ? static_cast<void*>(const_cast<float*>(t.floats.data()))
                                                        : static_cast<void*>(const_cast<int64_t*>(t.longs.data()));
    keep.push_back(executorch::extension::from_blob(
        data, sizes, t.dtype == HostTensor::DType::Float32 ? ScalarType::Float : ScalarType::Long));
    values.emplace_back(keep.back());
  }
  auto result = module_->execute(method, values);
  if (!result.ok()) throw EngineError(method + ": ExecuTorch failed to run it: " + error_text(result.error()));
  std::vector<HostTensor> out;
  for (const EValue& v : *result) {
    if (!v.isTensor()) throw EngineError(method + ": an output is not a tensor");
    const auto& t = v.toTensor();
    HostTensor h;
    h.shape.assign(t.sizes().begin(), t.sizes().end());
    size_t n = static_cast<size_t>(t.numel());
    switch (t.scalar_type()) {
      case ScalarType::Float:
        h.floats.assign(t.const_data_ptr<float>(), t.const_data_ptr<float>() + n);
        break;
      case ScalarType::Long:
        h.dtype = HostTensor::DType::Int64;
        h.longs.assign(t.const_data_ptr<int64_t>(), t.const_data_ptr<int64_t>() + n);
        break;
      default:
        throw EngineError(method + ": an output of " + dtype_name(t.scalar_type()) + " (float32 or int64 expected)");
    }
    out.push_back(std::move(h));
  }
  return out;
}

}  // namespace foveate

// A .pte through ExecuTorch's C++ Module with one memory per method, as the Android binding loads it:
// methods run by name on float32 / int64 tensors, every failure one EngineError with a one-line message.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace executorch::extension::module {
class Module;
}

namespace foveate {

struct EngineError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A host tensor: row-major data of one dtype, float32 or int64.
struct HostTensor {
  enum class DType { Float32, Int64 };
  DType dtype = DType::Float32;
  std::vector<int64_t> shape;
  std::vector<float> floats;
  std::vector<int64_t> longs;

  int64_t numel() const;
  std::string describe() const;  // "float32[1, 3, 128, 128]"
};

class Engine {
 public:
  // Loads the program and every method (so a missing kernel or a truncated file fails here).
  explicit Engine(const std::string& pte_path);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  std::vector<std::string> method_names() const;
  // Inputs in the method's order; checked against its metadata (count, dtype, rank, dims) before it runs.
  std::vector<HostTensor> run(const std::string& method, const std::vector<HostTensor>& inputs);

 private:
  void check_inputs(const std::string& method, const std::vector<HostTensor>& inputs);

  std::string path_;
  std::unique_ptr<executorch::extension::module::Module> module_;
  std::vector<std::string> methods_;
};

}  // namespace foveate

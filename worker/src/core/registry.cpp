#include "kangaroo/core/kernel.h"

namespace kangaroo {

const IndexBox& KernelContext::block_box() const {
  if (level_meta == nullptr || block < 0 || static_cast<std::size_t>(block) >= level_meta->boxes.size()) {
    fail_kernel_params(kernel, "block " + std::to_string(block) + " is out of range for level " + std::to_string(level));
  }
  return level_meta->boxes[static_cast<std::size_t>(block)];
}

void KernelContext::require_inputs(std::size_t n) const {
  if (inputs.size() < n) {
    fail_kernel_params(kernel, "expected at least " + std::to_string(n) + " inputs, got " + std::to_string(inputs.size()));
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (!inputs[i]) fail_kernel_params(kernel, "input " + std::to_string(i) + " is missing");
  }
}

void KernelContext::require_outputs(std::size_t n) const {
  if (outputs.size() < n) {
    fail_kernel_params(kernel, "expected at least " + std::to_string(n) + " outputs, got " + std::to_string(outputs.size()));
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (!outputs[i]) fail_kernel_params(kernel, "output " + std::to_string(i) + " is missing");
  }
}

void KernelRegistry::add(KernelEntry entry) {
  std::string name = entry.descriptor.name;
  entries_.insert_or_assign(std::move(name), std::move(entry));
}

const KernelEntry* KernelRegistry::try_find(std::string_view name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

const KernelEntry& KernelRegistry::find(std::string_view name) const {
  const KernelEntry* e = try_find(name);
  if (e == nullptr) fail(ErrorKind::not_found, "kernel not found: " + std::string(name));
  return *e;
}

std::vector<const KernelDescriptor*> KernelRegistry::list() const {
  std::vector<const KernelDescriptor*> out;
  out.reserve(entries_.size());
  for (const auto& [name, e] : entries_) out.push_back(&e.descriptor);
  return out;
}

KernelEntry make_kernel(std::string name, ParamType params, KernelFn fn, int n_inputs, int n_outputs,
                        BoundFn bound) {
  KernelEntry e;
  e.descriptor.name = std::move(name);
  e.descriptor.n_inputs = n_inputs;
  e.descriptor.n_outputs = n_outputs;
  e.descriptor.needs_neighbors = false;
  e.descriptor.param_schema_json = param_schema_json(params);
  e.param_type = params;
  e.fn = fn;
  e.bound = bound;
  return e;
}

namespace {
void not_implemented(KernelContext& ctx) {
  fail(ErrorKind::unsupported, "kernel " + std::string(ctx.kernel) + " is not implemented in this build");
}
std::optional<std::uint64_t> no_bound(const BoundQuery&) { return std::nullopt; }
}  // namespace

KernelEntry make_unimplemented_kernel(std::string name, ParamType params, int n_inputs, int n_outputs,
                                      bool has_bound) {
  KernelEntry e = make_kernel(std::move(name), params, &not_implemented, n_inputs, n_outputs,
                              has_bound ? &no_bound : nullptr);
  e.implemented = false;
  return e;
}

}  // namespace kangaroo

// Private: table describing every parameter alternative's fields, shared by
// the decoder, the encoder and the schema text (one source of truth).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "json_util.h"
#include "kangaroo/core/params.h"

namespace kangaroo::param_fields {

struct FieldSpec {
  std::string name;
  bool required = false;
  std::function<void(KernelParams&, const json_util::json&, const std::string&, json_util::IssueSink&)> decode;
  std::function<void(const KernelParams&, json_util::json&)> encode;
  std::string schema;  // JSON-Schema fragment of the value
};

// Fields of one alternative (empty for ParamType::none).
const std::vector<FieldSpec>& fields_of(ParamType type);
KernelParams default_params(ParamType type);

}  // namespace kangaroo::param_fields

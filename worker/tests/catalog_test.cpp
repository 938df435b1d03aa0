// KREG-7: the default catalog, and explicit failures for kernels that arrive
// with later components.
#include <gtest/gtest.h>

#include <set>

#include "kangaroo/kernels/register.h"

namespace kangaroo {
namespace {

TEST(Catalog, PendingKernelsFailExplicitly_KREG7) {
  KernelRegistry r;
  register_default_kernels(r);
  for (const char* name : {"flux_surface_integral_accumulate", "cylindrical_flux_surface_integral_accumulate",
                           "toomre_profile_accumulate"}) {
    const KernelEntry& e = r.find(name);
    EXPECT_FALSE(e.implemented) << name;
    KernelContext ctx;
    ctx.kernel = name;
    try {
      e.fn(ctx);
      FAIL() << name << " ran without an implementation";
    } catch (const Error& err) {
      EXPECT_NE(std::string(err.what()).find("not implemented in this build"), std::string::npos) << err.what();
      EXPECT_EQ(err.kind(), ErrorKind::unsupported);
    }
  }
}

TEST(Catalog, EveryOtherKernelIsImplemented_KREG7) {
  KernelRegistry r;
  register_default_kernels(r);
  int implemented = 0;
  for (const auto* d : r.list()) implemented += r.find(d->name).implemented ? 1 : 0;
  EXPECT_EQ(implemented, 59 - 3);
}

TEST(Catalog, ListingHasNoDuplicatesAndDescriptorsCarrySchemas_KREG3_KREG4) {
  KernelRegistry r;
  register_default_kernels(r);
  std::set<std::string> names;
  for (const auto* d : r.list()) {
    EXPECT_TRUE(names.insert(d->name).second) << d->name;
    const KernelEntry& e = r.find(d->name);
    if (e.param_type == ParamType::none) {
      EXPECT_TRUE(d->param_schema_json.empty()) << d->name;
    } else {
      EXPECT_NE(d->param_schema_json.find(param_type_name(e.param_type)), std::string::npos) << d->name;
    }
  }
}

TEST(Catalog, DynamicBoundEvaluatorsOfKREG6) {
  KernelRegistry r;
  register_default_kernels(r);
  for (const char* name : {"particle_load_field_chunk_f64", "particle_topk_modes_map", "particle_value_counts_reduce",
                           "amr_subbox_fetch_pack"}) {
    EXPECT_NE(r.find(name).bound, nullptr) << name;
  }
  EXPECT_EQ(r.find("field_expr").bound, nullptr);
}

}  // namespace
}  // namespace kangaroo

#include "kangaroo/exec/data_service.h"

#include <cstring>

namespace kangaroo {

SubboxResult cut_subbox(const Buffer& source, const IndexBox& chunk_box, const IndexBox& request_box) {
  const Descriptor& d = source.descriptor();
  // SUBBOX-4: nothing usable in the source echoes the request unchanged.
  if (d.scalar == ScalarType::opaque || d.rank != 3 || d.required_bytes() == 0) {
    return {request_box, nullptr};
  }
  const IndexBox inter = chunk_box.intersect(request_box);
  if (inter.empty()) {
    IndexBox none;
    none.lo = request_box.lo;
    for (int a = 0; a < 3; ++a) none.hi[a] = request_box.lo[a] - 1;
    return {none, nullptr};
  }
  for (int a = 0; a < 3; ++a) {
    if (static_cast<std::uint64_t>(chunk_box.extent(a)) != d.extents[a]) {
      fail(ErrorKind::buffer, "subbox source chunk " + d.to_string() + " does not match its box " + chunk_box.to_string());
    }
  }
  const std::uint64_t ext[3] = {static_cast<std::uint64_t>(inter.extent(0)), static_cast<std::uint64_t>(inter.extent(1)),
                                static_cast<std::uint64_t>(inter.extent(2))};
  BufferPtr out = Buffer::allocate(Descriptor::c_order(d.scalar, ext), InitPolicy::uninitialized);
  const std::size_t w = d.width();
  const std::byte* src = source.data();
  std::byte* dst = out->mutable_data();
  std::size_t o = 0;
  for (std::int64_t i = inter.lo[0]; i <= inter.hi[0]; ++i) {
    for (std::int64_t j = inter.lo[1]; j <= inter.hi[1]; ++j) {
      for (std::int64_t k = inter.lo[2]; k <= inter.hi[2]; ++k) {
        const std::int64_t off = (i - chunk_box.lo[0]) * d.strides[0] + (j - chunk_box.lo[1]) * d.strides[1] +
                                 (k - chunk_box.lo[2]) * d.strides[2];
        std::memcpy(dst + o, src + off, w);
        o += w;
      }
    }
  }
  return {inter, out};
}

void DataService::get_subbox(const ChunkId& source, const IndexBox& chunk_box, const IndexBox& request_box,
                             SubboxCallback done) {
  get(source, [chunk_box, request_box, done = std::move(done)](ConstBufferPtr value, std::exception_ptr error) {
    if (error) {
      done({}, error);
      return;
    }
    try {
      done(cut_subbox(*value, chunk_box, request_box), nullptr);
    } catch (...) {
      done({}, std::current_exception());
    }
  });
}

void LocalDataService::get(const ChunkId& id, GetCallback done) {
  ConstBufferPtr value;
  {
    std::lock_guard lock(mutex_);
    value = store_.find(id);
    if (!value && dataset_ && dataset_->has_chunk(id)) {
      value = dataset_->get_chunk(id);
      if (value) store_.put(id, value);
    }
    if (!value) {
      pending_[id].push_back(std::move(done));
      return;
    }
  }
  done(value, nullptr);
}

void LocalDataService::put(const ChunkId& id, ConstBufferPtr value) {
  std::vector<GetCallback> waiters;
  {
    std::lock_guard lock(mutex_);
    store_.put(id, value);
    auto it = pending_.find(id);
    if (it != pending_.end()) {
      waiters.swap(it->second);
      pending_.erase(it);
    }
  }
  for (auto& w : waiters) w(value, nullptr);
}

std::uint64_t LocalDataService::estimate_bytes(const ChunkId& id) const {
  std::lock_guard lock(mutex_);
  if (auto v = store_.find(id)) return v->byte_size();
  return dataset_ ? dataset_->estimate_chunk_bytes(id) : 0;
}

std::optional<std::uint64_t> LocalDataService::particle_records(const std::string& species, std::int64_t chunk) const {
  return dataset_ ? dataset_->particle_record_count(species, chunk) : std::nullopt;
}

}  // namespace kangaroo

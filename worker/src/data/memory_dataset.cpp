#include "kangaroo/data/memory_dataset.h"

#include <charconv>
#include <filesystem>

#include "kangaroo/core/npy.h"

namespace kangaroo {

ConstBufferPtr MemoryDataset::get_chunk(const ChunkId& id) {
  std::lock_guard lock(mutex_);
  auto it = chunks_.find(id);
  return it == chunks_.end() ? nullptr : it->second;
}

bool MemoryDataset::has_chunk(const ChunkId& id) const {
  std::lock_guard lock(mutex_);
  return chunks_.count(id) != 0;
}

std::uint64_t MemoryDataset::estimate_chunk_bytes(const ChunkId& id) const {
  std::lock_guard lock(mutex_);
  auto it = chunks_.find(id);
  return it == chunks_.end() ? 0 : it->second->byte_size();
}

std::optional<Descriptor> MemoryDataset::describe_chunk(const ChunkId& id) const {
  std::lock_guard lock(mutex_);
  auto it = chunks_.find(id);
  if (it == chunks_.end()) return std::nullopt;
  return it->second->descriptor();
}

std::string MemoryDataset::metadata_json(std::int32_t) const { return "{}"; }

// Memory chunks are addressed by explicit field IDs (CHUNK-4); names carry
// no component mapping.
void MemoryDataset::register_field(std::int32_t, const std::string&) {}
void MemoryDataset::register_field_component(std::int32_t, std::int32_t) {}

void MemoryDataset::set_chunk(const ChunkId& id, ConstBufferPtr buffer) {
  if (!buffer) fail(ErrorKind::invalid_argument, "set_chunk needs a buffer for " + id.to_string());
  buffer->descriptor().validate(buffer->byte_size());
  std::lock_guard lock(mutex_);
  chunks_[id] = std::move(buffer);
}

void MemoryDataset::set_chunk_raw(const ChunkId& id, std::string_view dtype,
                                  const std::optional<std::vector<std::uint64_t>>& shape, std::span<const std::byte> bytes) {
  const auto scalar = parse_scalar(dtype);
  if (!scalar) fail(ErrorKind::invalid_argument, "unsupported chunk dtype: " + std::string(dtype));
  Descriptor d;
  if (*scalar == ScalarType::opaque) {
    if (shape && !(shape->size() == 1 && (*shape)[0] == bytes.size())) {
      fail(ErrorKind::invalid_argument, "opaque chunk shape must equal its byte count");
    }
    d = Descriptor::opaque_bytes(bytes.size());
  } else {
    if (!shape || shape->empty()) fail(ErrorKind::invalid_argument, "numeric chunk writes require an explicit shape");
    d = Descriptor::c_order(*scalar, *shape);
  }
  set_chunk(id, Buffer::from_bytes(d, bytes));
}

std::size_t MemoryDataset::size() const {
  std::lock_guard lock(mutex_);
  return chunks_.size();
}

std::optional<ChunkId> parse_chunk_name(std::string_view stem) {
  ChunkId id;
  const char tags[5] = {'s', 'l', 'f', 'v', 'b'};
  std::int64_t values[5] = {};
  for (int i = 0; i < 5; ++i) {
    if (stem.empty() || stem.front() != tags[i]) return std::nullopt;
    stem.remove_prefix(1);
    const char* begin = stem.data();
    const char* end = stem.data() + stem.size();
    auto [ptr, ec] = std::from_chars(begin, end, values[i]);
    if (ec != std::errc() || ptr == begin) return std::nullopt;
    stem.remove_prefix(static_cast<std::size_t>(ptr - begin));
    if (i < 4) {
      if (stem.empty() || stem.front() != '_') return std::nullopt;
      stem.remove_prefix(1);
    }
  }
  if (!stem.empty()) return std::nullopt;
  if (values[1] < 0 || values[1] > INT16_MAX) return std::nullopt;
  for (int i : {0, 2, 3, 4}) {
    if (values[i] < INT32_MIN || values[i] > INT32_MAX) return std::nullopt;
  }
  id.step = static_cast<std::int32_t>(values[0]);
  id.level = static_cast<std::int16_t>(values[1]);
  id.field = static_cast<std::int32_t>(values[2]);
  id.version = static_cast<std::int32_t>(values[3]);
  id.block = static_cast<std::int32_t>(values[4]);
  return id;
}

std::size_t MemoryDataset::seed_from_directory(const std::string& directory) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(directory, ec)) {
    fail(ErrorKind::not_found, "seed directory '" + directory + "' does not exist or is not a directory");
  }
  std::size_t n = 0;
  for (const auto& entry : fs::directory_iterator(directory)) {
    if (!entry.is_regular_file()) continue;
    const auto path = entry.path();
    const std::string ext = path.extension().string();
    if (ext != ".npy" && ext != ".bin") continue;
    const auto id = parse_chunk_name(path.stem().string());
    if (!id) {
      fail(ErrorKind::invalid_argument, "seed file '" + path.string() +
                                            "' is not named s<step>_l<level>_f<field>_v<version>_b<block>" + ext);
    }
    if (ext == ".npy") {
      set_chunk(*id, read_npy_file(path.string()));
    } else {
      const auto bytes = read_file_bytes(path.string(), std::uint64_t{1} << 40);
      set_chunk(*id, Buffer::from_bytes(Descriptor::opaque_bytes(bytes.size()), bytes));
    }
    ++n;
  }
  return n;
}

}  // namespace kangaroo

// NumPy .npy codec (format versions 1.0-3.0 on read, 1.0 on write) for the
// scalar types of BUF-1. Used for dataset seeding, outputs and results.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "kangaroo/core/buffer.h"

namespace kangaroo {

// Parses a complete .npy image; `origin` names the source in errors.
// Throws Error(invalid_argument) on malformed or unsupported content.
BufferPtr decode_npy(std::span<const std::byte> bytes, const std::string& origin);
// Serializes a numeric buffer in C order (any stride permutation accepted).
std::vector<std::byte> encode_npy(const Buffer& buffer);

BufferPtr read_npy_file(const std::string& path);
// Writes `path` via a temporary file renamed into place; a failed write
// leaves no file behind.
void write_file_atomic(const std::string& path, std::span<const std::byte> bytes);
void write_file_atomic(const std::string& path, std::span<const std::span<const std::byte>> parts);
// encode_npy(buffer) written atomically to `path`, without copying a
// C-contiguous buffer's data.
void write_npy_file_atomic(const std::string& path, const Buffer& buffer);
std::vector<std::byte> read_file_bytes(const std::string& path, std::uint64_t max_bytes);

}  // namespace kangaroo

#include "kangaroo/core/npy.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace kangaroo {

namespace {

[[noreturn]] void bad(const std::string& origin, const std::string& what) {
  fail(ErrorKind::invalid_argument, "invalid .npy data in " + origin + ": " + what);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n')) s.remove_suffix(1);
  return s;
}

// Finds the value text following 'key': in a Python dict literal.
std::string_view dict_value(std::string_view header, std::string_view key, const std::string& origin) {
  const std::string needle = "'" + std::string(key) + "'";
  const auto pos = header.find(needle);
  if (pos == std::string_view::npos) bad(origin, "header lacks '" + std::string(key) + "'");
  auto rest = header.substr(pos + needle.size());
  rest = trim(rest);
  if (rest.empty() || rest.front() != ':') bad(origin, "malformed header near '" + std::string(key) + "'");
  rest = trim(rest.substr(1));
  if (!rest.empty() && rest.front() == '(') {
    const auto close = rest.find(')');
    if (close == std::string_view::npos) bad(origin, "unterminated shape tuple");
    return rest.substr(0, close + 1);
  }
  if (!rest.empty() && rest.front() == '\'') {
    const auto close = rest.find('\'', 1);
    if (close == std::string_view::npos) bad(origin, "unterminated string in header");
    return rest.substr(0, close + 1);
  }
  const auto end = rest.find_first_of(",}");
  return trim(rest.substr(0, end));
}

}  // namespace

BufferPtr decode_npy(std::span<const std::byte> bytes, const std::string& origin) {
  static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (bytes.size() < 10 || std::memcmp(bytes.data(), magic, 6) != 0) bad(origin, "missing NUMPY magic");
  const auto major = static_cast<unsigned>(bytes[6]);
  std::size_t header_len = 0;
  std::size_t offset = 0;
  if (major == 1) {
    header_len = static_cast<std::size_t>(bytes[8]) | (static_cast<std::size_t>(bytes[9]) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) bad(origin, "truncated header");
    header_len = 0;
    for (int i = 0; i < 4; ++i) header_len |= static_cast<std::size_t>(bytes[8 + i]) << (8 * i);
    offset = 12;
  } else {
    bad(origin, "unsupported format version " + std::to_string(major));
  }
  if (header_len > bytes.size() - offset) bad(origin, "header length exceeds file size");
  const std::string_view header(reinterpret_cast<const char*>(bytes.data() + offset), header_len);
  const std::size_t data_offset = offset + header_len;

  std::string_view descr = dict_value(header, "descr", origin);
  if (descr.size() < 2 || descr.front() != '\'') bad(origin, "descr must be a string");
  descr = descr.substr(1, descr.size() - 2);
  ScalarType scalar;
  if (descr == "|u1" || descr == "<u1" || descr == "u1" || descr == "|b1") scalar = ScalarType::u8;
  else if (descr == "<i8") scalar = ScalarType::i64;
  else if (descr == "<f4") scalar = ScalarType::f32;
  else if (descr == "<f8") scalar = ScalarType::f64;
  else bad(origin, "unsupported dtype '" + std::string(descr) + "' (expected u1, <i8, <f4 or <f8)");

  const std::string_view fo = dict_value(header, "fortran_order", origin);
  bool fortran = false;
  if (fo == "True") fortran = true;
  else if (fo != "False") bad(origin, "fortran_order must be True or False");

  std::string_view shape = dict_value(header, "shape", origin);
  if (shape.size() < 2 || shape.front() != '(' || shape.back() != ')') bad(origin, "shape must be a tuple");
  shape = shape.substr(1, shape.size() - 2);
  std::vector<std::uint64_t> extents;
  while (!trim(shape).empty()) {
    shape = trim(shape);
    const auto comma = shape.find(',');
    const std::string_view item = trim(shape.substr(0, comma));
    if (item.empty()) bad(origin, "malformed shape");
    std::uint64_t v = 0;
    for (char c : item) {
      if (c < '0' || c > '9') bad(origin, "malformed shape entry '" + std::string(item) + "'");
      v = checked_add(checked_mul(v, 10), static_cast<std::uint64_t>(c - '0'));
    }
    extents.push_back(v);
    if (comma == std::string_view::npos) break;
    shape = shape.substr(comma + 1);
  }
  if (extents.empty()) extents.push_back(1);  // numpy scalars are stored as rank-1 length 1
  if (extents.size() > static_cast<std::size_t>(kMaxRank)) bad(origin, "rank above 4 is not supported");
  const Descriptor d = fortran ? Descriptor::fortran_order(scalar, extents) : Descriptor::c_order(scalar, extents);
  const std::uint64_t need = d.required_bytes();
  if (bytes.size() - data_offset != need) {
    bad(origin, "payload holds " + std::to_string(bytes.size() - data_offset) + " bytes but shape needs " +
                    std::to_string(need));
  }
  return Buffer::from_bytes(d, bytes.subspan(data_offset, need));
}

namespace {

// Magic, version 1.0, header length and the dict, padded so the data start on
// a 64-byte boundary.
std::vector<std::byte> npy_header(const Descriptor& d) {
  const char* descr = nullptr;
  switch (d.scalar) {
    case ScalarType::u8: descr = "|u1"; break;
    case ScalarType::i64: descr = "<i8"; break;
    case ScalarType::f32: descr = "<f4"; break;
    case ScalarType::f64: descr = "<f8"; break;
    case ScalarType::opaque: fail(ErrorKind::buffer, "opaque buffers cannot be written as .npy (BUF-4)");
  }
  std::string shape = "(";
  for (int a = 0; a < d.rank; ++a) {
    shape += std::to_string(d.extents[a]);
    shape += (d.rank == 1 || a + 1 < d.rank) ? "," : "";
    if (a + 1 < d.rank) shape += " ";
  }
  shape += ")";
  std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  const std::size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::vector<std::byte> out(10 + header.size());
  const unsigned char magic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  std::memcpy(out.data(), magic, 8);
  out[8] = static_cast<std::byte>(header.size() & 0xff);
  out[9] = static_cast<std::byte>((header.size() >> 8) & 0xff);
  std::memcpy(out.data() + 10, header.data(), header.size());
  return out;
}

}  // namespace

std::vector<std::byte> encode_npy(const Buffer& buffer) {
  const Descriptor& d = buffer.descriptor();
  std::vector<std::byte> out = npy_header(d);
  const std::uint64_t n = d.element_count();
  const std::size_t w = d.width();
  if (d.is_c_contiguous()) {
    const auto b = buffer.bytes();
    out.insert(out.end(), b.begin(), b.end());
    return out;
  }
  // Any other dense stride permutation: gather in C order.
  const std::size_t base = out.size();
  out.resize(base + n * w);
  const std::byte* src = buffer.data();
  for (std::uint64_t p = 0; p < n; ++p) {
    std::uint64_t rem = p;
    std::uint64_t off = 0;
    for (int a = d.rank - 1; a >= 0; --a) {
      off += (rem % d.extents[a]) * static_cast<std::uint64_t>(d.strides[a]);
      rem /= d.extents[a];
    }
    std::memcpy(out.data() + base + p * w, src + off, w);
  }
  return out;
}

std::vector<std::byte> read_file_bytes(const std::string& path, std::uint64_t max_bytes) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) fail(ErrorKind::not_found, "cannot read '" + path + "': " + ec.message());
  if (size > max_bytes) {
    fail(ErrorKind::invalid_argument, "file '" + path + "' has " + std::to_string(size) + " bytes, above the limit of " +
                                          std::to_string(max_bytes));
  }
  std::vector<std::byte> out(size);
  std::ifstream in(path, std::ios::binary);
  if (!in || !in.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(size))) {
    fail(ErrorKind::io, "cannot read '" + path + "'");
  }
  return out;
}

BufferPtr read_npy_file(const std::string& path) {
  const auto bytes = read_file_bytes(path, std::uint64_t{1} << 40);
  return decode_npy(bytes, path);
}

void write_npy_file_atomic(const std::string& path, const Buffer& buffer) {
  if (!buffer.descriptor().is_c_contiguous()) {
    write_file_atomic(path, encode_npy(buffer));
    return;
  }
  // The data go straight from the buffer: no copy of a large result.
  const std::vector<std::byte> header = npy_header(buffer.descriptor());
  const std::span<const std::byte> parts[] = {header, buffer.bytes()};
  write_file_atomic(path, parts);
}

void write_file_atomic(const std::string& path, std::span<const std::byte> bytes) {
  const std::span<const std::byte> parts[] = {bytes};
  write_file_atomic(path, parts);
}

void write_file_atomic(const std::string& path, std::span<const std::span<const std::byte>> parts) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) fail(ErrorKind::io, "cannot create '" + tmp + "': " + std::strerror(errno));
  bool ok = true;
  for (const auto& bytes : parts)
    ok = ok && (bytes.empty() || std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size());
  const bool closed = std::fclose(f) == 0;
  if (!ok || !closed) {
    std::remove(tmp.c_str());
    fail(ErrorKind::io, "cannot write '" + path + "' (disk full?)");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) fail(ErrorKind::io, "cannot rename '" + tmp + "' to '" + path + "': " + ec.message());
}

}  // namespace kangaroo

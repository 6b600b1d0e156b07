// What every C++ shim of csrc/ shares: each extern "C" function catches every C++ exception and writes
// its message into `err` (a buffer of `len` bytes), returning nonzero.
#pragma once
#include <cstddef>
#include <cstring>
#include <exception>

namespace s3pet_shim {
inline int fail(char* err, size_t len, const char* msg) {
  if (err != nullptr && len > 0) {
    std::strncpy(err, msg, len - 1);
    err[len - 1] = '\0';
  }
  return 1;
}
}  // namespace s3pet_shim

#define S3PET_TRY(body)                                          \
  try {                                                          \
    body;                                                        \
    return 0;                                                    \
  } catch (const std::exception& e) {                            \
    return s3pet_shim::fail(err, len, e.what());                 \
  } catch (...) {                                                \
    return s3pet_shim::fail(err, len, "unknown C++ exception");  \
  }

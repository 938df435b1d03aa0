# Project-wide warning and sanitizer flags, applied per target.
add_library(kangaroo_warnings INTERFACE)
target_compile_options(kangaroo_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
    -Wcast-align -Wnull-dereference -Wimplicit-fallthrough>)
if(KANGAROO_WERROR)
  target_compile_options(kangaroo_warnings INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
endif()

if(KANGAROO_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

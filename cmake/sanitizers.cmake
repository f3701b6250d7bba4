# CXR_SANITIZE=ON: the whole tree (libraries, programs, tests) under ASan + UBSan, no recovery.
if(CXR_SANITIZE)
  set(CXR_SAN_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
  add_compile_options(${CXR_SAN_FLAGS})
  add_link_options(${CXR_SAN_FLAGS})
endif()

# All compiler warning flags in one place, applied per target with cxr_target_warnings().
set(CXR_C_WARNINGS
    -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes -Wmissing-prototypes -Wvla
    -Wnull-dereference -Wpointer-arith -Wcast-qual -Wwrite-strings -Wundef
    -Wimplicit-fallthrough -Wno-unused-parameter)
set(CXR_CXX_WARNINGS -Wall -Wextra -Wshadow -Wformat=2 -Wnull-dereference -Wno-unused-parameter)

function(cxr_target_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:C>:${CXR_C_WARNINGS}>
    $<$<COMPILE_LANGUAGE:CXX>:${CXR_CXX_WARNINGS}>
    $<$<BOOL:${CXR_WERROR}>:-Werror>)
  target_compile_definitions(${target} PRIVATE _GNU_SOURCE)
endfunction()

# Hardening for every build; release builds also get _FORTIFY_SOURCE.
add_compile_options(-fstack-protector-strong -fno-strict-aliasing)
if(NOT CXR_SANITIZE)
  add_compile_options($<$<CONFIG:Release>:-D_FORTIFY_SOURCE=2>)
endif()
set(CMAKE_POSITION_INDEPENDENT_CODE ON)
add_link_options(-Wl,-z,relro,-z,now)

# Test helpers shared by every module.
#   cxr_add_unit_test(NAME SOURCES f.c... LIBS lib... [NEEDS_DATA])
#   cxr_add_script_test(NAME SCRIPT path [ARGS ...] [LABELS ...] [TIMEOUT s])
# Tests that need ../shared/data get CXR_DATA_DIR in their environment and exit 77 (skipped)
# when it is absent; ctest reports them as skipped, never as passed.
pkg_check_modules(CMOCKA REQUIRED IMPORTED_TARGET cmocka)
set(CXR_SKIP_CODE 77)

function(cxr_add_unit_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  cxr_target_warnings(${name})
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/tests/unit)
  target_link_libraries(${name} PRIVATE ${T_LIBS} PkgConfig::CMOCKA)
  add_test(NAME ${name} COMMAND ${name})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "unit;${T_LABELS}" TIMEOUT ${T_TIMEOUT}
    SKIP_RETURN_CODE ${CXR_SKIP_CODE}
    ENVIRONMENT "CXR_DATA_DIR=${CXR_DATA_DIR};CXR_SOURCE_DIR=${CMAKE_SOURCE_DIR};CXR_BUILD_DIR=${CMAKE_BINARY_DIR}")
endfunction()

function(cxr_add_script_test name)
  cmake_parse_arguments(T "" "SCRIPT;TIMEOUT" "ARGS;LABELS" ${ARGN})
  add_test(NAME ${name} COMMAND bash ${T_SCRIPT} ${T_ARGS})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  if(NOT T_LABELS)
    set(T_LABELS integration)
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
    SKIP_RETURN_CODE ${CXR_SKIP_CODE}
    ENVIRONMENT "CXR_DATA_DIR=${CXR_DATA_DIR};CXR_SOURCE_DIR=${CMAKE_SOURCE_DIR};CXR_BUILD_DIR=${CMAKE_BINARY_DIR};CXR_SANITIZE=$<BOOL:${CXR_SANITIZE}>")
endfunction()

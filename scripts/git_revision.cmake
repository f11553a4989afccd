# Writes OUT: `#define LINGUA_GIT_REVISION "<commit>[-dirty]"` for the checkout SRC ("" outside
# git). Run at every build (CMakeLists.txt); OUT is rewritten only when the revision changes, so
# nothing recompiles otherwise.
execute_process(COMMAND git -C "${SRC}" describe --always --dirty --abbrev=40
                OUTPUT_VARIABLE rev OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  set(rev "")
endif()
set(text "#define LINGUA_GIT_REVISION \"${rev}\"\n")
set(old "")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT old STREQUAL text)
  file(WRITE "${OUT}" "${text}")
endif()

# Fails when docs/options.md differs from what gen-options-doc generates from the option table.
execute_process(COMMAND ${GENERATOR} OUTPUT_VARIABLE generated RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "gen-options-doc failed (${status})")
endif()
if(EXISTS ${DOC})
  file(READ ${DOC} committed)
else()
  set(committed "")
endif()
if(NOT generated STREQUAL committed)
  message(FATAL_ERROR "docs/options.md is out of date with the option table (config/options.cpp).\n"
                      "Regenerate it from the build directory with:\n"
                      "  bin/gen-options-doc > ${DOC}")
endif()

# `cmake --install BUILD --prefix PREFIX`: the server, the pure-Python client and Django backend, the
# docs. The installed server finds the Python modules relative to its own location (pyhost computes
# PREFIX/PYTHON_INSTALL_DIR from /proc/self/exe), never in the source tree.
install(TARGETS server RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
file(GLOB doc_pages ${CMAKE_SOURCE_DIR}/docs/*.md)
install(FILES ${doc_pages} DESTINATION ${CMAKE_INSTALL_DOCDIR}/docs)  # README's links keep working
# PYTHON_INSTALL_DIR and the python/ files: pyhost/CMakeLists.txt, beside the code that looks for them.

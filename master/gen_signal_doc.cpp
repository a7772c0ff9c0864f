// Prints the signal table generated from master/signals.hpp, as docs/architecture.md holds it between
// its "signal table" markers; ctest's master.signal_doc_up_to_date compares the two.
#include <iostream>

#include "master/signals.hpp"

int main() {
  std::cout << master::signal_table_markdown();
  return 0;
}

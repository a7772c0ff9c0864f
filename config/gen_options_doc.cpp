// Prints the options reference generated from the option table: build/bin/gen-options-doc > docs/options.md
#include <iostream>

#include "config/config.hpp"

int main() {
  std::cout << config::options_reference_markdown();
  return 0;
}

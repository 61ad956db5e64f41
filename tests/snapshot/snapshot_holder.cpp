// A reader in another process, for tests/snapshot: opens a DuckDB file read-only (as
// an analyst's DuckDB would, which takes a POSIX read lock), prints "ready", and holds
// it until its standard input closes.
#include <duckdb.h>

#include <cstdio>
#include <iostream>
#include <string>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: snapshot_holder FILE.duckdb\n");
    return 2;
  }
  duckdb_config config = nullptr;
  duckdb_create_config(&config);
  duckdb_set_config(config, "access_mode", "READ_ONLY");
  duckdb_database db = nullptr;
  char* error = nullptr;
  if (duckdb_open_ext(argv[1], &db, config, &error) == DuckDBError) {
    std::fprintf(stderr, "%s: %s\n", argv[1], error != nullptr ? error : "cannot open");
    return 1;
  }
  duckdb_destroy_config(&config);
  std::printf("ready\n");
  std::fflush(stdout);
  for (std::string line; std::getline(std::cin, line);) {
  }
  duckdb_close(&db);
  return 0;
}

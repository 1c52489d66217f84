/* Trace dumps: replaying one into the private database never crashes, hangs, attaches or writes
 * a file; whatever it admits holds only kvpr's tables. */
#include <sqlite3.h>
#include "../../hwmodel/calib.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *t = fuzz_text(data, size);
    sqlite3 *h;
    if (hw_calib_load_dump(t, "fuzz.sql", &h) == KV_OK) {
        sqlite3_stmt *q;
        FUZZ_CHECK(sqlite3_prepare_v2(h, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT IN"
                                         " ('runs', 'spans', 'metrics', 'measurements', 'calibrations')",
                                      -1, &q, NULL) == SQLITE_OK,
                   "schema unreadable");
        FUZZ_CHECK(sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int(q, 0) == 0, "a foreign table was created");
        sqlite3_finalize(q);
        FUZZ_CHECK(sqlite3_prepare_v2(h, "SELECT count(*) FROM pragma_database_list", -1, &q, NULL) == SQLITE_OK, "no database list");
        FUZZ_CHECK(sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int(q, 0) <= 2, "a database was attached");
        sqlite3_finalize(q);
        sqlite3_close(h);
    }
    free(t);
    return 0;
}

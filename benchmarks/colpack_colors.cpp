// Color counts from ColPack for a sparsity pattern, for benchmarks/bench_colpack.py.
// Optional: needs Debian's libcolpack-dev (never a dependency of fastad).
//
//   colpack_colors PATTERN_FILE
//
// The file: "m n" on the first line, then one line per row: "count j1 j2 ...".
// Prints one line per coloring: "<kind> <ordering> <colors>".
#include <ColPack/ColPackHeaders.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

using namespace ColPack;

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: colpack_colors PATTERN_FILE\n";
        return 2;
    }
    std::ifstream in(argv[1]);
    int m = 0, n = 0;
    in >> m >> n;
    std::vector<std::vector<unsigned int>> rows(m);
    std::vector<unsigned int*> ptrs(m);
    for (int i = 0; i < m; ++i) {
        unsigned int c = 0;
        in >> c;
        rows[i].resize(c + 1);
        rows[i][0] = c;
        for (unsigned int k = 1; k <= c; ++k) in >> rows[i][k];
        ptrs[i] = rows[i].data();
    }
    const char* orderings[] = {"NATURAL", "LARGEST_FIRST", "SMALLEST_LAST", "INCIDENCE_DEGREE"};
    for (const char* o : orderings) {
        BipartiteGraphPartialColoringInterface g(SRC_MEM_ADOLC, ptrs.data(), m, n);
        g.PartialDistanceTwoColoring(o, "COLUMN_PARTIAL_DISTANCE_TWO");
        std::printf("column %s %d\n", o, g.GetVertexColorCount());
    }
    for (const char* o : orderings) {
        BipartiteGraphPartialColoringInterface g(SRC_MEM_ADOLC, ptrs.data(), m, n);
        g.PartialDistanceTwoColoring(o, "ROW_PARTIAL_DISTANCE_TWO");
        std::printf("row %s %d\n", o, g.GetVertexColorCount());
    }
    if (m == n) {
        for (const char* o : orderings) {
            GraphColoringInterface g(SRC_MEM_ADOLC, ptrs.data(), m);
            g.Coloring(o, "STAR");
            std::printf("star %s %d\n", o, g.GetVertexColorCount());
        }
    }
    const char* bi_orderings[] = {"NATURAL", "LARGEST_FIRST", "DYNAMIC_LARGEST_FIRST",
                                  "SMALLEST_LAST", "INCIDENCE_DEGREE"};
    for (const char* o : bi_orderings) {
        BipartiteGraphBicoloringInterface g(SRC_MEM_ADOLC, ptrs.data(), m, n);
        g.Bicoloring(o, "IMPLICIT_COVERING__STAR_BICOLORING");
        // seed sizes are what the sweeps cost: reverse lanes + forward lanes
        double **left = nullptr, **right = nullptr;
        int lr = 0, lc = 0, rr = 0, rc = 0;
        g.GenerateSeedJacobian(&left, &lr, &lc, &right, &rr, &rc, o,
                               "IMPLICIT_COVERING__STAR_BICOLORING");
        std::printf("bicolor %s %d\n", o, lr + rc);
    }
    return 0;
}

/*
 * toy_data.h - a small synthetic dataset for tests that train.
 */
#ifndef SPARROW_TESTS_TOY_DATA_H
#define SPARROW_TESTS_TOY_DATA_H

#include "sparrow/sparrow.h"

/* n samples of (1, 4, 4) u8 images in 4 classes, the class being the brightest quadrant, built
 * as IDX bytes and loaded through the real reader (features = pixel / 255). NULL on failure. */
sp_dataset *test_toy_dataset(int64_t n, uint64_t seed);

#endif

/* Minimal stand-in for the LZ4 block API, for Verilator's FST writer.
 *
 * Verilator's FST tracing (fstcpp_writer.cpp) includes <lz4.h> and its makefile links
 * -llz4; machines without liblz4-dev cannot build --trace-fst models. This shim provides
 * the calls that writer makes (LZ4_compressBound, LZ4_compress_default) plus a full block
 * decoder (LZ4_decompress_safe) used to check the output and read FST files back.
 *
 * The encoder emits valid LZ4 block format holding only literals (no matches): any LZ4
 * decoder reads it, it just does not shrink the data. Self-written, not upstream code.
 * bebert.sim.fst builds this into a static liblz4.a and points Verilator at it.
 */
#ifndef BEBERT_LZ4SHIM_H
#define BEBERT_LZ4SHIM_H

#ifdef __cplusplus
extern "C" {
#endif

/* Largest input the API accepts, as in upstream LZ4. */
#define LZ4_MAX_INPUT_SIZE 0x7E000000

/* Worst-case output size of LZ4_compress_default for inputSize bytes; 0 if inputSize
 * is negative or above LZ4_MAX_INPUT_SIZE. */
int LZ4_compressBound(int inputSize);

/* Compress srcSize bytes of src into dst (capacity dstCapacity). Returns the number of
 * bytes written, or 0 if srcSize is invalid or dst is too small. */
int LZ4_compress_default(const char *src, char *dst, int srcSize, int dstCapacity);

/* Decode one LZ4 block of compressedSize bytes into dst (capacity dstCapacity). Returns
 * the decoded size, or a negative number if the block is malformed or does not fit. */
int LZ4_decompress_safe(const char *src, char *dst, int compressedSize, int dstCapacity);

#ifdef __cplusplus
}
#endif

#endif

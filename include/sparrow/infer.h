/*
 * sparrow/infer.h - inference sessions: load a model once, run it many times with no
 * allocation on the hot path.
 *
 * A session borrows a model (built, loaded from a model file or mapped), reserves every
 * layer's activation buffers and caches for up to max_batch samples and starts the threads, all
 * in sp_session_new. After that, sp_session_run and sp_session_predict_u8 allocate nothing:
 * they run the model in evaluation mode (BatchNorm running statistics, Dropout off) into the
 * buffers reserved up front. Results are bit for bit those of sp_model_forward(m, x, batch,
 * false, ...) and do not depend on the thread count.
 *
 * A worked example, classifying 28x28 u8 images (as image files hold them) with a model file:
 *
 *     sp_checkpoint ck = {0};
 *     sp_session *s = NULL;
 *     if (sp_checkpoint_load("lenet.spw", &ck) != SP_OK ||
 *         sp_session_new(ck.model, 64, 0, &s) != SP_OK) {     // up to 64 images, all threads
 *         fprintf(stderr, "%s\n", sp_last_error());
 *         ...
 *     }
 *     uint8_t images[64 * 784];        // sample-major: image b is bytes [b*784, (b+1)*784)
 *     int32_t cls[64];
 *     float prob[64 * 10];             // optional: row b holds image b's class probabilities
 *     while (... n = next images ...) {
 *         if (sp_session_predict_u8(s, images, n, cls, prob) != SP_OK) ...   // no allocation
 *         ... cls[b], prob[b * 10 + cls[b]] ...
 *     }
 *     sp_session_free(s);              // before the model it borrows
 *     sp_checkpoint_free(&ck);
 *
 * Feature-major batches (what sp_model_forward takes) go through sp_session_run instead.
 *
 * A session runs on the model's own activation buffers: one pass at a time per model (a
 * session is not for concurrent calls from several threads; it uses nthreads itself), and a
 * sp_model_forward on the same model between runs overwrites the output of the last run. The
 * model must outlive the session and keep its shape; training it (its weights change) is fine.
 * docs/INFERENCE.md has the details.
 */
#ifndef SPARROW_INFER_H
#define SPARROW_INFER_H

#include "sparrow/core.h"
#include "sparrow/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sp_session sp_session;

/* A session on m (borrowed) for batches of 1 to max_batch samples on nthreads threads (<= 0:
 * all). Reserves every buffer a pass of max_batch samples needs, and the session's own input
 * buffer (features x max_batch floats) for sp_session_predict_u8, by one evaluation pass over
 * zeros; a mixture-of-experts block is also reserved for every expert taking all the tokens it
 * could be routed (set a run-time top_k with sp_model_moe_set_top_k before this). The warm-up
 * pass counts in moe routing statistics (sp_model_moe_reset_stats clears them). SP_EINVAL for
 * NULL or max_batch < 1; SP_EOVERFLOW if the buffers would not fit; SP_ENOMEM. Returns owned
 * *out (sp_session_free). */
sp_status sp_session_new(sp_model *m, int64_t max_batch, int nthreads, sp_session **out);

/* Runs the model in evaluation mode on x, feature-major (features, batch) with leading
 * dimension batch, exactly as sp_model_forward. *y points at the output (out features, batch),
 * owned by the model, valid until the next pass on it. No allocation. SP_EINVAL for NULL
 * arguments or batch outside [1, max_batch] (naming both). */
sp_status sp_session_run(sp_session *s, const float *x, int64_t batch, const float **y);

/* Classifies raw u8 samples, SAMPLE-major as image files hold them: sample b is the features
 * bytes images[b * features ...], in the model's (c, h, w) order. Each byte becomes byte *
 * sp_model_input_scale(m) (what the model was trained on), transposed into the session's
 * input buffer, and the model runs as in sp_session_run. classes[b] (if not NULL) gets the
 * index of the largest output of sample b (the first one on ties, as sp_evaluate), probs (if
 * not NULL; batch x classes, row b for sample b) the softmax of its outputs. No allocation.
 * SP_EINVAL as sp_session_run, and SP_EUNSUPPORTED for a model whose output is not one value
 * per class (a language model's per-token logits). */
sp_status sp_session_predict_u8(sp_session *s, const uint8_t *images, int64_t batch,
                                int32_t *classes, float *probs);

/* The borrowed model, the batch capacity, features per input sample (c * h * w) and outputs per
 * sample. */
sp_model *sp_session_model(const sp_session *s);
int64_t sp_session_max_batch(const sp_session *s);
int64_t sp_session_in_features(const sp_session *s);
int64_t sp_session_out_features(const sp_session *s);

/* Frees the session (not the model); accepts NULL. */
void sp_session_free(sp_session *s);

#ifdef __cplusplus
}
#endif
#endif

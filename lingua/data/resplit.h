#pragma once
// Re-splitting the data loaders of a checkpoint saved by N data-parallel ranks over M ranks, so a
// run can resume on another GPU count. A pure function of the saved states (no file is read): the
// chunk files are the union of those the N states list, split again with assign_chunks.
//
// The rule, per source (each source has its own epochs):
//  - Epoch: e = the least epoch of the N readers, each taken where its state points (the start of
//    the rank's current shuffle-buffer fill). The new ranks are put at the start of epoch e over
//    their new chunk assignment and pass over the lines already read in e (SourceReaderState::
//    already_read): every line of a rank already past e; the lines before the reader of a rank in
//    e, with those its own state marks as read (an earlier re-split). The next epoch is read whole.
//  - Tokens read but not yet packed (the tail of an old rank's last document) go to new rank
//    r % M, old ranks in order: each such token is still packed exactly once.
//  - RNGs: new rank k draws from rank k's source and shuffle streams (data_*_rng_stream), each at
//    the highest counter any old rank's stream of that kind reached, so no draw of an old rank's
//    stream k is used twice; a fresh fill starts (next_batch 0).
//  - Counters (DataStats): old rank r's are added to new rank r % M's, so their sum is kept.
// What that means for training:
//  - Replayed: a state points at the start of its rank's current fill, so the documents read for
//    that fill are read again by the new ranks: the next_batch * batch_size windows an old rank had
//    handed out of that fill are trained on twice (as the same tokens, packed into other windows
//    and batches). The rest of the fill is not lost: it is read once. Nothing is replayed for a
//    rank whose state is at a fill boundary (next_batch 0).
//  - Replayed: what a rank ahead of e had read of later epochs is read again in epoch e + 1.
//  - Skipped: nothing. Every other document of epoch e is read exactly once, by one new rank.
// M == N returns the states unchanged (resuming on the same count stays bitwise exact), and a
// state made here resumes bitwise on its own rank count again.
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

namespace lingua {

// What a re-split replays (see above), for messages and tests.
struct ResplitSummary {
  int64_t replayed_windows = 0;  // sum over old ranks of next_batch * batch_size
  std::vector<int64_t> epoch;    // per source (sorted by name): the epoch e the new ranks finish
};

// old_states[r]: DataLoader::state() of old rank r, for every r of the N old ranks (in order).
// Returns M = new_world states; state k loads with DataLoader::load_state on a loader of rank k of
// M with the same data config and chunk files. Fails (lingua::Error naming the rank and key) when
// the states are unreadable or do not belong together (other configs, ranks, chunk files).
std::vector<nlohmann::json> resplit_loader_states(const std::vector<nlohmann::json>& old_states, int new_world,
                                                  ResplitSummary* summary = nullptr);

}  // namespace lingua

#include "client/media/opus_audio.h"

namespace kabar::client::media {

OpusSender::OpusSender(int bitrate) {
  int err = 0;
  encoder_ = opus_encoder_create(kOpusRate, 1, OPUS_APPLICATION_VOIP, &err);
  if (encoder_ == nullptr) return;
  opus_encoder_ctl(encoder_, OPUS_SET_BITRATE(bitrate));
  // RFC 7587 §3.3: in-band FEC, sized for the few percent of loss a call should survive.
  opus_encoder_ctl(encoder_, OPUS_SET_INBAND_FEC(1));
  opus_encoder_ctl(encoder_, OPUS_SET_PACKET_LOSS_PERC(5));
}

OpusSender::~OpusSender() {
  if (encoder_ != nullptr) opus_encoder_destroy(encoder_);
}

std::vector<std::uint8_t> OpusSender::encode(std::span<const std::int16_t, kOpusFrame> pcm) {
  std::vector<std::uint8_t> out(1275);  // RFC 6716 §3.4: the largest frame
  opus_int32 n = opus_encode(encoder_, pcm.data(), kOpusFrame, out.data(), opus_int32(out.size()));
  out.resize(n > 0 ? std::size_t(n) : 0);
  return out;
}

OpusReceiver::OpusReceiver() {
  int err = 0;
  decoder_ = opus_decoder_create(kOpusRate, 1, &err);
}

OpusReceiver::~OpusReceiver() {
  if (decoder_ != nullptr) opus_decoder_destroy(decoder_);
}

JitterBuffer::Push OpusReceiver::push(std::uint16_t sequence,
                                      std::span<const std::uint8_t> payload) {
  return jitter_.push(sequence, std::vector<std::uint8_t>(payload.begin(), payload.end()));
}

std::span<const std::int16_t> OpusReceiver::pull() {
  auto frame = jitter_.pop();
  if (!frame) return {};
  int n = -1;
  if (!frame->missing) {
    n = opus_decode(decoder_, frame->payload.data(), opus_int32(frame->payload.size()), pcm_,
                    kOpusFrame * 6, 0);
  }
  if (n < 0) {
    ++concealed_;
    // The packet after the lost one carries the lost one's FEC (RFC 6716 §2.1.7).
    if (const auto* next = jitter_.peek()) {
      n = opus_decode(decoder_, next->data(), opus_int32(next->size()), pcm_, kOpusFrame, 1);
      if (n > 0) ++recovered_;
    }
    if (n < 0) n = opus_decode(decoder_, nullptr, 0, pcm_, kOpusFrame, 0);  // RFC 6716 §4.4
  }
  return std::span<const std::int16_t>(pcm_, n > 0 ? std::size_t(n) : 0);
}

}  // namespace kabar::client::media

/* SPDX-License-Identifier: GPL-2.0-or-later */
/* image: detect and normalise firmware files (see image.h).
 *
 * ELF goes through libelf. Intel HEX and UF2 are parsed here: both are a few dozen lines of
 * record walking, and the Debian packages that read them (srecord, picotool) are programs,
 * not libraries. Every parser only reads inside the buffer it is given and bounds the
 * normalised size before allocating, since files come from users and the network. */
#include "image/image.h"

#include <errno.h>
#include <gelf.h>
#include <libelf.h>
#include <stdlib.h>
#include <string.h>

#include "proto/uf2.h"
#include "util.h"

static uint32_t
get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int
fail(const char **ret_error, int err, const char *why)
{
	if (ret_error)
		*ret_error = why;
	return err;
}

/* Lay out `n` chunks of (address, bytes) into one 0xFF-filled buffer; overlaps are an error
 * because no linker output has them and a hand-edited file that does is ambiguous. */
struct chunk {
	uint64_t addr;
	const uint8_t *data;
	size_t size;
};

static int
cmp_chunk(const void *a, const void *b)
{
	const struct chunk *x = a, *y = b;

	return x->addr < y->addr ? -1 : x->addr > y->addr ? 1 : 0;
}

static int
assemble(struct chunk *chunks, size_t n, struct image *ret, const char **ret_error)
{
	uint64_t lo, hi = 0;
	uint8_t *data;

	if (n == 0)
		return fail(ret_error, -EINVAL, "no data in the file");
	qsort(chunks, n, sizeof(*chunks), cmp_chunk);
	lo = chunks[0].addr;
	for (size_t i = 0; i < n; i++) {
		uint64_t end = chunks[i].addr + chunks[i].size;

		if (i > 0 && chunks[i].addr < hi)
			return fail(ret_error, -EINVAL, "overlapping data at the same address");
		if (end > hi)
			hi = end;
	}
	if (hi > UINT32_MAX + UINT64_C(1))
		return fail(ret_error, -EINVAL, "data beyond the 4 GiB address space");
	if (hi - lo > IMAGE_MAX_SIZE)
		return fail(ret_error, -EFBIG, "image spans more than 16 MiB");
	data = xmalloc((size_t)(hi - lo) ? (size_t)(hi - lo) : 1);
	memset(data, 0xFF, (size_t)(hi - lo));
	for (size_t i = 0; i < n; i++)
		if (chunks[i].size)
			memcpy(data + (chunks[i].addr - lo), chunks[i].data, chunks[i].size);
	ret->has_load_address = true;
	ret->load_address = (uint32_t)lo;
	ret->data = data;
	ret->size = (size_t)(hi - lo);
	return 0;
}

static int
hex_nibble(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Intel HEX (Intel "Hexadecimal Object File Format Specification" rev. A): records
 * ":LLAAAATT<data>CC", checksum = two's complement of the byte sum. Types 00 data, 01 end,
 * 02 extended segment address, 03 start segment, 04 extended linear address, 05 start
 * linear. Record bytes are decoded into `raw` so that chunks can point into it. */
struct hex_reader {
	const uint8_t *buf;
	size_t len, pos;
	uint8_t *raw; /* the decoded bytes of every record so far */
	size_t n_raw;
	struct chunk *chunks;
	size_t n_chunks, cap;
	uint32_t base; /* from the last extended address record */
	bool eof;
};

/* Decode the record at h->pos (after its ':') into h->raw and check its length and
 * checksum; *ret_rec points at its bytes. */
static int
hex_decode_record(struct hex_reader *h, uint8_t **ret_rec, const char **ret_error)
{
	uint8_t *rec = h->raw + h->n_raw;
	uint8_t sum = 0;
	size_t count, start = h->n_raw;

	while (h->pos + 1 < h->len && hex_nibble(h->buf[h->pos]) >= 0 &&
	       hex_nibble(h->buf[h->pos + 1]) >= 0) {
		h->raw[h->n_raw++] =
		    (uint8_t)(hex_nibble(h->buf[h->pos]) << 4 | hex_nibble(h->buf[h->pos + 1]));
		h->pos += 2;
	}
	if (h->pos < h->len && h->buf[h->pos] != '\r' && h->buf[h->pos] != '\n')
		return fail(ret_error, -EINVAL, "bad character in a record");
	count = h->n_raw - start;
	if (count < 5 || count != (size_t)rec[0] + 5)
		return fail(ret_error, -EINVAL,
			    "record length does not match its byte count (truncated file?)");
	for (size_t i = 0; i < count; i++)
		sum = (uint8_t)(sum + rec[i]);
	if (sum != 0)
		return fail(ret_error, -EINVAL, "record checksum mismatch");
	*ret_rec = rec;
	return 0;
}

/* What a checked record means: data becomes a chunk at base + its address. */
static int
hex_apply_record(struct hex_reader *h, const uint8_t *rec, const char **ret_error)
{
	uint16_t addr = (uint16_t)(rec[1] << 8 | rec[2]);

	switch (rec[3]) {
	case 0x00:
		if (rec[0] == 0)
			break;
		if (h->n_chunks == h->cap) {
			h->cap = h->cap ? h->cap * 2 : 64;
			h->chunks = xreallocarray(h->chunks, h->cap, sizeof(*h->chunks));
		}
		h->chunks[h->n_chunks++] =
		    (struct chunk){(uint64_t)h->base + addr, rec + 4, rec[0]};
		break;
	case 0x01:
		h->eof = true;
		break;
	case 0x02:
	case 0x04:
		if (rec[0] != 2)
			return fail(ret_error, -EINVAL, "bad extended address record");
		h->base = (uint32_t)(rec[4] << 8 | rec[5]) << (rec[3] == 0x02 ? 4 : 16);
		break;
	case 0x03:
	case 0x05:
		break; /* entry point: the vector table is what counts on Cortex-M */
	default:
		return fail(ret_error, -EINVAL, "unknown record type");
	}
	return 0;
}

/* Every record, in order; blank space between lines is skipped. */
static int
hex_read_records(struct hex_reader *h, const char **ret_error)
{
	while (h->pos < h->len) {
		uint8_t c = h->buf[h->pos];
		uint8_t *rec;
		int r;

		if (c == '\r' || c == '\n' || c == ' ' || c == '\t') {
			h->pos++;
			continue;
		}
		if (h->eof)
			return fail(ret_error, -EINVAL, "data after the end-of-file record");
		if (c != ':')
			return fail(ret_error, -EINVAL, "a line does not start with ':'");
		h->pos++;
		r = hex_decode_record(h, &rec, ret_error);
		if (r < 0)
			return r;
		r = hex_apply_record(h, rec, ret_error);
		if (r < 0)
			return r;
	}
	if (!h->eof)
		return fail(ret_error, -EINVAL, "no end-of-file record (truncated file?)");
	return 0;
}

static int
parse_hex(const uint8_t *buf, size_t len, struct image *ret, const char **ret_error)
{
	struct hex_reader h = {.buf = buf, .len = len, .raw = xmalloc(len / 2 + 1)};
	int r = hex_read_records(&h, ret_error);

	if (r == 0)
		r = assemble(h.chunks, h.n_chunks, ret, ret_error);
	free(h.chunks);
	free(h.raw);
	return r;
}

/* Bytes at the start of a PT_LOAD segment that belong to no allocated section: GNU ld puts
 * the ELF and program headers into the first segment when the link address leaves room
 * below it on its page (a "34KiB bootloader" build at 0x08008800 gets a segment from
 * 0x08008000 that starts with the ELF header). They are not firmware: `objcopy -O binary`
 * writes sections, and so does every flasher. 0 when the file has no section headers. */
static size_t
segment_lead(Elf *e, const GElf_Phdr *ph)
{
	uint64_t first = UINT64_MAX;
	Elf_Scn *scn = NULL;

	while ((scn = elf_nextscn(e, scn))) {
		GElf_Shdr sh;

		if (!gelf_getshdr(scn, &sh) || !(sh.sh_flags & SHF_ALLOC) ||
		    sh.sh_type == SHT_NOBITS || sh.sh_size == 0)
			continue;
		if (sh.sh_offset >= ph->p_offset && sh.sh_offset < ph->p_offset + ph->p_filesz &&
		    sh.sh_offset < first)
			first = sh.sh_offset;
	}
	return first == UINT64_MAX ? 0 : (size_t)(first - ph->p_offset);
}

/* ELF: the PT_LOAD segments at their physical (load) addresses, which is what
 * `objcopy -O binary` writes and where .data's initial values live in flash. */
static int
parse_elf(const uint8_t *buf, size_t len, struct image *ret, const char **ret_error)
{
	struct chunk *chunks = NULL;
	size_t n_chunks = 0, n_ph = 0;
	char *copy;
	GElf_Ehdr eh;
	Elf *e = NULL;
	int r;

	if (elf_version(EV_CURRENT) == EV_NONE)
		return fail(ret_error, -EINVAL, "libelf is unusable");
	/* libelf wants a writable buffer; ours is const and owned by the caller */
	copy = xmalloc(len);
	memcpy(copy, buf, len);
	e = elf_memory(copy, len);
	if (!e || elf_kind(e) != ELF_K_ELF || !gelf_getehdr(e, &eh)) {
		r = fail(ret_error, -EINVAL, "unreadable ELF header (truncated file?)");
		goto out;
	}
	if (eh.e_ident[EI_CLASS] != ELFCLASS32 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
	    eh.e_machine != EM_ARM) {
		r = fail(ret_error, -EINVAL, "not a 32-bit little-endian ARM ELF file");
		goto out;
	}
	if (elf_getphdrnum(e, &n_ph) < 0 || n_ph == 0 || eh.e_phoff > len ||
	    (uint64_t)n_ph * eh.e_phentsize > len - eh.e_phoff) {
		r = fail(ret_error, -EINVAL, "no readable program headers (truncated file?)");
		goto out;
	}
	chunks = xnew_array(struct chunk, n_ph);
	for (size_t i = 0; i < n_ph; i++) {
		GElf_Phdr ph;
		size_t lead;

		if (!gelf_getphdr(e, (int)i, &ph)) {
			r = fail(ret_error, -EINVAL, "unreadable program header");
			goto out;
		}
		if (ph.p_type != PT_LOAD || ph.p_filesz == 0)
			continue;
		if (ph.p_offset > len || ph.p_filesz > len - ph.p_offset) {
			r = fail(ret_error, -EINVAL,
				 "segment extends past the end of the file "
				 "(truncated file?)");
			goto out;
		}
		lead = segment_lead(e, &ph);
		chunks[n_chunks++] = (struct chunk){ph.p_paddr + lead, buf + ph.p_offset + lead,
						    (size_t)ph.p_filesz - lead};
	}
	r = assemble(chunks, n_chunks, ret, ret_error);
out:
	free(chunks);
	if (e)
		elf_end(e);
	free(copy);
	return r;
}

/* UF2 (protocols.md §5.2): every block must be a complete RP2040 flash block, and blockNo
 * must run 0..numBlocks-1 exactly once, as the RP2040 bootrom and Klipper's flasher expect;
 * a file missing a block would leave a hole of stale flash. */
static int
parse_uf2(const uint8_t *buf, size_t len, struct image *ret, const char **ret_error)
{
	size_t n_blocks = len / UF2_BLOCK_SIZE, n_chunks = 0;
	struct chunk *chunks;
	uint8_t *seen;
	uint32_t total;
	int r;

	if (len % UF2_BLOCK_SIZE != 0)
		return fail(ret_error, -EINVAL,
			    "UF2 size is not a multiple of 512 (truncated file?)");
	if (n_blocks > IMAGE_MAX_SIZE / UF2_PAYLOAD)
		return fail(ret_error, -EFBIG, "UF2 file has too many blocks");
	total = get_le32(buf + 24);
	if (total != n_blocks)
		return fail(ret_error, -EINVAL,
			    "UF2 numBlocks does not match the number of blocks "
			    "in the file (truncated or concatenated file?)");
	chunks = xnew_array(struct chunk, n_blocks);
	seen = xcalloc(n_blocks, 1);
	for (size_t i = 0; i < n_blocks; i++) {
		const uint8_t *b = buf + i * UF2_BLOCK_SIZE;
		uint32_t flags = get_le32(b + 8), addr = get_le32(b + 12), no = get_le32(b + 20);

		if (get_le32(b) != UF2_MAGIC_START0 || get_le32(b + 4) != UF2_MAGIC_START1 ||
		    get_le32(b + 508) != UF2_MAGIC_END) {
			r = fail(ret_error, -EINVAL, "UF2 block with bad magic numbers");
			goto out;
		}
		if (get_le32(b + 24) != total) {
			r = fail(ret_error, -EINVAL, "UF2 blocks disagree on numBlocks");
			goto out;
		}
		if (no >= total || seen[no]) {
			r = fail(ret_error, -EINVAL,
				 no >= total ? "UF2 blockNo out of range" : "UF2 blockNo repeated");
			goto out;
		}
		seen[no] = 1;
		if (flags & UF2_FLAG_NOT_MAIN_FLASH)
			continue;
		if (!(flags & UF2_FLAG_FAMILY_ID) || get_le32(b + 28) != UF2_FAMILY_RP2040) {
			r = fail(ret_error, -EINVAL,
				 "UF2 block is not for the RP2040 family "
				 "(familyID 0xe48bff56)");
			goto out;
		}
		if (get_le32(b + 16) != UF2_PAYLOAD || addr % UF2_PAYLOAD != 0) {
			r = fail(ret_error, -EINVAL,
				 "UF2 block payload is not 256 bytes at a "
				 "256-byte aligned address");
			goto out;
		}
		chunks[n_chunks++] = (struct chunk){addr, b + 32, UF2_PAYLOAD};
	}
	/* all blockNo values are distinct and < total, and there are total blocks: no gaps */
	r = assemble(chunks, n_chunks, ret, ret_error);
	if (r == -EINVAL && n_chunks)
		*ret_error = "UF2 blocks overlap or lie outside the address space";
out:
	free(seen);
	free(chunks);
	return r;
}

int
image_parse(const uint8_t *buf, size_t len, struct image *ret, const char **ret_error)
{
	struct image img = {0};
	const char *dummy;
	int r = 0;

	if (!ret_error)
		ret_error = &dummy;
	if (!buf && len)
		return fail(ret_error, -EINVAL, "no data");
	if (len >= 4 && memcmp(buf, "\177ELF", 4) == 0) {
		img.format = IMAGE_FORMAT_ELF;
		r = parse_elf(buf, len, &img, ret_error);
	} else if (len >= 8 && get_le32(buf) == UF2_MAGIC_START0 &&
		   get_le32(buf + 4) == UF2_MAGIC_START1) {
		img.format = IMAGE_FORMAT_UF2;
		r = parse_uf2(buf, len, &img, ret_error);
	} else if (len >= 1 && buf[0] == ':') {
		img.format = IMAGE_FORMAT_HEX;
		r = parse_hex(buf, len, &img, ret_error);
	} else {
		if (len > IMAGE_MAX_SIZE)
			return fail(ret_error, -EFBIG, "file is larger than 16 MiB");
		img.format = IMAGE_FORMAT_BIN;
		if (len) {
			img.data = xmalloc(len);
			memcpy(img.data, buf, len);
		}
		img.size = len;
	}
	if (r < 0)
		return r;
	*ret = img;
	return 0;
}

void
image_done(struct image *img)
{
	if (!img)
		return;
	free(img->data);
	*img = (struct image){0};
}

const char *
image_format_to_string(enum image_format f)
{
	static const char *const names[_IMAGE_FORMAT_MAX] = {
	    [IMAGE_FORMAT_BIN] = "bin",
	    [IMAGE_FORMAT_HEX] = "hex",
	    [IMAGE_FORMAT_ELF] = "elf",
	    [IMAGE_FORMAT_UF2] = "uf2",
	};

	if ((unsigned)f >= _IMAGE_FORMAT_MAX)
		return "unknown";
	return names[f];
}

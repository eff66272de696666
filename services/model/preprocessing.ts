import sharp, { type Metadata } from "sharp";
import { ModelArtifactError, type PreprocessingFile } from "./metadata.js";
import type { Signature, TensorSpec } from "./tensors.js";

/*
 * The prep-pred pattern, beside the model: an image model declares in its metadata.json how an
 * encoded image (PNG, JPEG, WebP) becomes the float tensor its graph takes — colour or grey,
 * resize, centre crop, scale, mean and standard deviation per channel, NCHW or NHWC — and the
 * Predictor runs those steps with sharp (libvips, on libuv's thread pool: off the event loop).
 */

/** Limits on what an image may be before it is decoded. */
export interface ImageLimits {
  /** Bytes of one encoded image. */
  readonly maxBytes: number;
  /** Pixels (width x height) of one image, read from its header before decoding: a decompression bomb is refused. */
  readonly maxPixels: number;
}

/** An image the steps could not take; the message says why (INVALID_ARGUMENT, or RESOURCE_EXHAUSTED when `tooLarge`). */
export class ImageError extends Error {
  override readonly name = "ImageError";
  constructor(
    message: string,
    readonly tooLarge = false,
  ) {
    super(message);
  }
}

/** The formats an image model takes. */
const formats = new Set(["png", "jpeg", "webp"]);

/** An image model's checked steps: encoded images in, the float32 tensor of its input out. */
export class Preprocessor {
  readonly channels: number;
  readonly width: number;
  readonly height: number;

  constructor(
    readonly steps: PreprocessingFile,
    /** The graph input the images fill. */
    readonly input: TensorSpec,
  ) {
    this.channels = steps.color === "rgb" ? 3 : 1;
    const out = steps.center_crop ?? ("width" in steps.resize ? steps.resize : undefined);
    if (out === undefined) throw new ModelArtifactError("preprocessing: resizing the shorter side needs a center_crop to give every image one size");
    this.width = out.width;
    this.height = out.height;
  }

  /** The input's shape for `count` images. */
  shapeOf(count: number): number[] {
    return this.steps.layout === "NCHW" ? [count, this.channels, this.height, this.width] : [count, this.height, this.width, this.channels];
  }

  /** Decodes and transforms each image (on libuv's pool), packed into one float32 tensor. */
  async run(images: readonly Uint8Array[], limits: ImageLimits): Promise<Float32Array> {
    const size = this.channels * this.height * this.width;
    const out = new Float32Array(images.length * size);
    await Promise.all(images.map(async (image, i) => this.#pack(await this.#pixels(image, i, limits), out.subarray(i * size, (i + 1) * size))));
    return out;
  }

  /** One image's pixels after colour, resize and crop: channel-interleaved bytes, height x width x channels. */
  async #pixels(image: Uint8Array, index: number, limits: ImageLimits): Promise<Buffer> {
    const which = `image ${index}`;
    if (image.length > limits.maxBytes) throw new ImageError(`${which} is ${image.length} bytes; at most ${limits.maxBytes}`, true);
    let header: Metadata;
    try {
      header = await sharp(image).metadata();
    } catch (err) {
      throw new ImageError(`${which} could not be read as an image (PNG, JPEG or WebP expected): ${(err as Error).message.replace(/\s+/g, " ").trim()}`);
    }
    if (header.format === undefined || !formats.has(header.format)) throw new ImageError(`${which} is ${header.format ?? "of an unknown format"}; an image model takes PNG, JPEG or WebP`);
    const pixels = (header.width ?? 0) * (header.height ?? 0);
    if (pixels > limits.maxPixels) throw new ImageError(`${which} is ${header.width}x${header.height} pixels; at most ${limits.maxPixels} are decoded`, true);
    const steps = this.steps;
    // failOn "warning": a truncated or corrupt image is refused, not decoded in part.
    let pipeline = sharp(image, { failOn: "warning", limitInputPixels: limits.maxPixels }).rotate().removeAlpha();
    pipeline = steps.color === "grayscale" ? pipeline.grayscale() : pipeline.toColourspace("srgb");
    if ("shorter_side" in steps.resize) {
      const shorter = Math.min(header.width ?? 1, header.height ?? 1);
      const factor = steps.resize.shorter_side / shorter;
      pipeline = pipeline.resize(Math.max(1, Math.round((header.width ?? 1) * factor)), Math.max(1, Math.round((header.height ?? 1) * factor)), { fit: "fill" });
    } else {
      pipeline = pipeline.resize(steps.resize.width, steps.resize.height, { fit: steps.resize.fit === "cover" ? "cover" : "fill" });
    }
    try {
      if (steps.center_crop !== undefined) {
        // Crop after the resize has happened (a second pipeline), centred.
        const resized = await pipeline.raw().toBuffer({ resolveWithObject: true });
        const { width, height } = resized.info;
        const crop = steps.center_crop;
        if (crop.width > width || crop.height > height) throw new ImageError(`${which} is ${width}x${height} after resizing; the crop is ${crop.width}x${crop.height}`);
        return await sharp(resized.data, { raw: { width, height, channels: resized.info.channels } })
          .extract({ left: Math.floor((width - crop.width) / 2), top: Math.floor((height - crop.height) / 2), width: crop.width, height: crop.height })
          .raw()
          .toBuffer();
      }
      return await pipeline.raw().toBuffer();
    } catch (err) {
      if (err instanceof ImageError) throw err;
      throw new ImageError(`${which} could not be decoded: ${(err as Error).message.replace(/\s+/g, " ").trim()}`);
    }
  }

  /** Scales, normalises and lays out one image's bytes into its slice of the tensor. */
  #pack(pixels: Buffer, out: Float32Array): void {
    const { scale, mean, std, layout } = this.steps;
    const channels = this.channels;
    const plane = this.height * this.width;
    if (pixels.length !== plane * channels) throw new ImageError(`an image came out as ${pixels.length} values, not ${plane * channels}`);
    for (let p = 0; p < plane; p++) {
      for (let c = 0; c < channels; c++) {
        const value = (pixels[p * channels + c] * scale - mean[c]) / std[c];
        out[layout === "NCHW" ? c * plane + p : p * channels + c] = value;
      }
    }
  }
}

/** Checks an image model's steps against its graph: the input exists, is float32, and has the shape the steps make. */
export function checkedPreprocessor(steps: PreprocessingFile, signature: Signature): Preprocessor {
  const problems: string[] = [];
  const input = signature.inputs.find((i) => i.name === steps.input);
  if (input === undefined) throw new ModelArtifactError(`preprocessing.input "${steps.input}" is not an input of the graph (${signature.inputs.map((i) => i.name).join(", ")})`);
  if (signature.inputs.length !== 1) problems.push(`an image model takes one input; the graph has ${signature.inputs.length}`);
  if (input.dtype !== "float32") problems.push(`input "${input.name}" is ${input.dtype}; preprocessing makes float32`);
  if (steps.color !== "rgb" && steps.color !== "grayscale") problems.push(`color must be "rgb" or "grayscale", not ${JSON.stringify(steps.color)}`);
  if (steps.layout !== "NCHW" && steps.layout !== "NHWC") problems.push(`layout must be "NCHW" or "NHWC", not ${JSON.stringify(steps.layout)}`);
  const channels = steps.color === "rgb" ? 3 : 1;
  if (!Array.isArray(steps.mean) || steps.mean.length !== channels || !Array.isArray(steps.std) || steps.std.length !== channels || steps.std.some((s) => s === 0)) {
    problems.push(`mean and std need ${channels} value${channels > 1 ? "s" : ""} each (std never 0)`);
  }
  if (typeof steps.scale !== "number") problems.push("scale must be a number");
  if (problems.length > 0) throw new ModelArtifactError(`preprocessing: ${problems.join("; ")}`);
  const preprocessor = new Preprocessor(steps, input);
  const made = preprocessor.shapeOf(-1);
  const agrees = input.shape.length === 4 && input.shape.every((d, i) => d === -1 || i === 0 || d === made[i]);
  if (!agrees) throw new ModelArtifactError(`preprocessing makes [N, ${made.slice(1).join(", ")}] (${steps.layout}); input "${input.name}" is [${input.shape.join(", ")}]`);
  return preprocessor;
}

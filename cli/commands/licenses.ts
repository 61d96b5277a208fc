import { readFile } from 'node:fs/promises';
import { CliError } from '../errors.ts';
import { parseFlags } from '../flags.ts';

const HELP = `Usage: mailplus licenses

Prints THIRD_PARTY_NOTICES: name, version, license and copyright of every open-source component
shipped with Mail-Plus (its production dependencies), followed by their license texts.
`;

/** THIRD_PARTY_NOTICES sits at the package root (the image copies it next to package.json). */
export const NOTICES_URL = new URL('../../THIRD_PARTY_NOTICES', import.meta.url);

export async function runLicenses(argv: string[]): Promise<number> {
  const { help } = parseFlags(argv, {}, HELP);
  if (help) return 0;
  let text: string;
  try {
    text = await readFile(NOTICES_URL, 'utf8');
  } catch (err) {
    throw new CliError(`THIRD_PARTY_NOTICES is missing from this installation: ${(err as Error).message}`, 1);
  }
  process.stdout.write(text);
  return 0;
}

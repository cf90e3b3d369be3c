/** The oldest release of each supported Node.js line (package.json `engines`): [major, minor]. */
export declare const MIN_NODE: readonly (readonly [number, number])[];
/** Whether Node.js `version` (default: this process's) is one the package supports. */
export declare function nodeSupported(version?: string): boolean;
/** Exits with code 1 and one line saying what to run instead when `version` (default: this process's) is not supported. */
export declare function requireNode(what: string, version?: string): void;
